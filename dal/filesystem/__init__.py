from dal.filesystem.blob_store import FilesystemBlobStore

__all__ = ["FilesystemBlobStore"]
