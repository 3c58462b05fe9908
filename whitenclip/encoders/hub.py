"""Hugging Face cache and network manners shared by the hub-loading backends (``openclip:``, ``hf:``)."""

from __future__ import annotations

import os

from whitenclip.errors import WhitenclipError

NET_PROBE_TIMEOUT = 4.0
"""Seconds the one connectivity check before a download may take (uncached weights only)."""


def _hub_offline() -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if check is not None else constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_cached(repo_id: str, filename: str) -> str | None:
    """Path of ``repo_id/filename`` in the Hugging Face cache (``main`` revision), else None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def probe_network(url: str, timeout: float = NET_PROBE_TIMEOUT) -> str | None:
    """One ``HEAD url`` with a short timeout: None when a server answers, else the reason (str).

    Honours ``HTTPS_PROXY``/``HTTP_PROXY``. Any HTTP status or a TLS error counts as reachable
    (the downloader may trust other certificates); only failing name resolution, refused or
    timed-out connections count as unreachable.
    """
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None
        reason = exc.reason
        return (getattr(reason, "strerror", None) or str(reason)) if reason else "unreachable"
    except (TimeoutError, OSError) as exc:
        return "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    return None


def _require_network(spec: str, what: str, url: str, hint: str) -> None:
    """Raise one line when weights ``what`` are not cached and ``url``'s server cannot be reached.

    ``hint`` (the backend's offline choices) ends the message.
    """
    from urllib.parse import urlsplit

    if _hub_offline():
        raise WhitenclipError(f"cannot load {spec}: {what} is not in the Hugging Face cache ({_hub_cache_dir()}) "
                              f"and HF_HUB_OFFLINE is set; {hint}")
    reason = probe_network(url)
    if reason is not None:
        raise WhitenclipError(f"cannot load {spec}: {what} is not cached ({_hub_cache_dir()}) and "
                              f"{urlsplit(url).netloc} cannot be reached ({reason}); {hint}")
