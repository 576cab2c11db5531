"""Webhooks: a job's outcome POSTed, signed, to the URL its owner gave at submit.

    signing     per-owner secrets, signatures and their verification (pure)
    urls        which webhook URLs a profile accepts (SSRF guard)
    state       which event a finished job announces, and whether it is still owed
    retry       the retry schedule (exponential backoff with jitter)
    sender      the HTTP POST (httpx), behind a small port with an in-memory fake
    dispatcher  the background threads that deliver, record and retry

Nothing here connects at import; the processes' wiring builds a dispatcher.
"""
