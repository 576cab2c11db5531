from dal.inline.job_queue import InlineJobQueue

__all__ = ["InlineJobQueue"]
