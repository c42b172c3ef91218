"""Log folders and site folders on object storage (any fsspec URL: ``s3://``, ``gs://``, ``memory://``, ...).

Inspect itself reads and writes logs through fsspec, so an eval log directory may already be a URL; these
helpers give ``steerboard ingest --logs URL``, ``steerboard build --out URL`` and ``steerboard run --log-dir
URL`` the same reach. Credentials and endpoints come from the environment the filesystem library reads
(for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or a profile, ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``), never from suite files.

Every check here runs before any expensive work, and a problem is raised as :class:`StorageError` with one line
naming the setting to fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# which optional package serves which protocol, for the install hint
_PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_LOG_JSON_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}")
_CREDENTIAL_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for a "
    "non-AWS server",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS",
}


class StorageError(ValueError):
    """A storage location that cannot be used as given (the message names the setting to fix)."""


NET_TIMEOUT_ENV = "STEERBOARD_NET_TIMEOUT"
"""Seconds a storage request may go unanswered before it fails (``--timeout`` sets it for a command)."""
DEFAULT_NET_TIMEOUT = 30.0
WAIT_NOTICE_AFTER = 3.0
"""Seconds of waiting on a storage request before saying what is being waited for."""


def net_timeout() -> float:
    """The storage request timeout in seconds (``$STEERBOARD_NET_TIMEOUT``, default 30).

    Raises:
        StorageError: the variable is not a positive number.
    """
    raw = os.environ.get(NET_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_NET_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise StorageError(f"{NET_TIMEOUT_ENV}={raw!r}: give the storage timeout in seconds (a positive number)")
    return value


def set_net_timeout(seconds: float | None) -> None:
    """``--timeout SECONDS``: bound every storage request of this process (and of processes it starts)."""
    if seconds is None:
        return
    if not seconds > 0:
        raise StorageError(f"--timeout {seconds}: give the storage timeout in seconds (a positive number)")
    os.environ[NET_TIMEOUT_ENV] = str(seconds)


@contextlib.contextmanager
def waiting(what: str, url: str) -> Iterator[None]:
    """Say on stderr what a storage call waits for once it has waited :data:`WAIT_NOTICE_AFTER` seconds, and
    how long it waits at most (a quick answer prints nothing)."""
    import sys

    timeout = net_timeout()
    timer = threading.Timer(WAIT_NOTICE_AFTER, lambda: print(
        f"steerboard: waiting for {url} to answer ({what}); giving up after {timeout:.0f} s without an answer "
        f"(--timeout SECONDS or {NET_TIMEOUT_ENV} to change)", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def is_url(location: str | Path) -> bool:
    """True for an fsspec URL other than a plain local path (``file://`` counts as local)."""
    s = str(location)
    return "://" in s and not s.startswith("file://")


def local_path(location: str | Path) -> Path:
    """A local location as a Path (``file://`` prefix removed)."""
    return Path(str(location).removeprefix("file://"))


def join(location: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or URL (``Path`` would fold ``s3://`` into ``s3:/``)."""
    if not is_url(location):
        return str(Path(location, *parts))
    return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])


def protocol(url: str) -> str:
    """The URL's scheme (``s3`` for ``s3://bucket/key``)."""
    return url.split("://", 1)[0].lower()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path inside it.

    Raises:
        StorageError: unknown protocol, or its filesystem package not installed (with the install command).
    """
    import fsspec

    proto = protocol(url)
    options: dict[str, Any] = {}
    if proto in ("s3", "s3a"):
        # botocore's defaults (60 s per read, retried by botocore and again 5 times by s3fs) let an endpoint
        # that accepts connections and never answers hold a command for minutes: one bounded try each
        timeout = net_timeout()
        options["config_kwargs"] = {
            "connect_timeout": timeout, "read_timeout": timeout, "retries": {"max_attempts": 1, "mode": "standard"},
        }
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        if options:
            fs.retries = 1  # s3fs's own retry loop around every call (a class attribute, default 5)
    except ValueError as ex:
        if "Protocol not known" in str(ex) or "not known" in str(ex):
            known = ", ".join(sorted(p for p in fsspec.available_protocols() if len(p) <= 6))
            raise StorageError(
                f"unknown storage protocol {proto!r} in {url}; valid protocols include: {known}"
            ) from ex
        raise StorageError(f"{url}: {ex}") from ex
    except ImportError as ex:
        pkg = _PROTOCOL_PACKAGES.get(proto, str(getattr(ex, "name", "") or "the fsspec backend"))
        extra = "pip install 'steerboard[scale]'" if pkg == "s3fs" else f"pip install {pkg}"
        raise StorageError(f"{proto}:// locations need {pkg}: {extra}") from ex
    return fs, path


def _explain(url: str, ex: BaseException, action: str) -> StorageError:
    """Turn a filesystem exception into one line naming what to fix."""
    proto = protocol(url)
    text = f"{type(ex).__name__}: {ex}"
    low = text.lower()
    bucket = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else url
    if "nosuchbucket" in low or "bucket does not exist" in low or "specified bucket does not exist" in low:
        return StorageError(f"{action} {url}: bucket {bucket!r} does not exist (create it, or fix the URL)")
    if "nocredentials" in low or "unable to locate credentials" in low or "credentials" in low and (
        "missing" in low or "not found" in low or "unable" in low
    ):
        return StorageError(f"{action} {url}: no credentials; {_CREDENTIAL_HINT.get(proto, 'configure them')}")
    if "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low or "accessdenied" in low or isinstance(
        ex, PermissionError
    ):
        return StorageError(
            f"{action} {url}: access denied ({text[:120]}); "
            f"{_CREDENTIAL_HINT.get(proto, 'check the credentials')}"
        )
    if "read timeout" in low or "timed out" in low or "timeouterror" in low:
        return StorageError(
            f"{action} {url}: no answer within {net_timeout():.0f} s ({text[:120]}); check the endpoint, or give "
            f"more time with --timeout SECONDS / {NET_TIMEOUT_ENV}"
        )
    if proto == "s3" and ("could not connect" in low or "connect timeout" in low or "endpoint" in low):
        return StorageError(f"{action} {url}: cannot reach the storage endpoint ({text[:160]}); check AWS_ENDPOINT_URL")
    return StorageError(f"{action} {url}: {text[:200]}")


def _bucket_check(fs: Any, url: str, path: str, action: str) -> None:
    """Fail early when the URL's bucket is missing (object stores list a missing prefix as empty)."""
    bucket = path.split("/", 1)[0]
    if protocol(url) in ("s3", "s3a", "gs", "gcs") and bucket:
        # ``info`` rather than ``exists``: s3fs's ``exists`` answers False for missing credentials too
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise StorageError(
                f"{action} {url}: bucket {bucket!r} does not exist (create it, or fix the URL)"
            ) from None
        except Exception as ex:  # noqa: BLE001 - any backend failure becomes one clear line
            raise _explain(url, ex, action) from ex


@dataclass(frozen=True)
class RemoteLog:
    """One log object found under a URL."""

    url: str
    size: int | None
    content_hash: str


def _content_hash(fs: Any, path: str, info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "md5", "content_md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    # no hash in the listing (e.g. memory://): fsspec's checksum of the object's info (size, times)
    return str(fs.checksum(path))


def find_logs(url: str) -> list[RemoteLog]:
    """Every Inspect log under ``url`` (``*.eval`` and timestamp-named ``*.json``, recursively), sorted.

    One recursive listing with details (size and ETag/hash come with it), the same naming rule as Inspect's
    ``list_eval_logs``.

    Raises:
        StorageError: the location cannot be listed (missing bucket, credentials, unknown protocol, or nothing
            at that URL).
    """
    fs, path = filesystem(url)
    with waiting("listing logs", url):
        _bucket_check(fs, url, path, "cannot read logs from")
    try:
        with waiting("listing logs", url):
            if not fs.exists(path):
                raise StorageError(f"log location not found: {url}")
            listing = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    except StorageError:
        raise
    except Exception as ex:  # noqa: BLE001
        raise _explain(url, ex, "cannot read logs from") from ex
    out = []
    for p, info in listing.items():
        name = p.rsplit("/", 1)[-1]
        if info.get("type", "file") != "file":
            continue
        if not (name.endswith(".eval") or (name.endswith(".json") and _LOG_JSON_NAME.match(name))):
            continue
        out.append(RemoteLog(fs.unstrip_protocol(p), info.get("size"), _content_hash(fs, p, info)))
    return sorted(out, key=lambda r: r.url)


def download_iter(
    urls: list[str], dest: str | Path, chunk: int = 25, in_flight: int = 4
) -> Iterator[tuple[str, str]]:
    """Copy remote objects into the local folder ``dest``, yielding ``(url, local path)`` in the order of
    ``urls`` as soon as each object has arrived, so a reader can work on the first objects while later ones
    are still in transit.

    The objects go in chunks of ``chunk``, ``in_flight`` chunks at a time; each chunk is one batched
    ``fs.get`` (s3fs fetches its objects concurrently). fsspec's own batched ``get`` only reports progress as
    a count (its callback does not say which object arrived), hence the chunks here.

    Raises:
        Whatever the filesystem raised for a chunk, when that chunk's first object is reached. Leaving the
        iterator early cancels the chunks not yet started.
    """
    from concurrent.futures import ThreadPoolExecutor

    local = staging_paths(urls, dest)
    chunks = [(urls[i : i + chunk], local[i : i + chunk]) for i in range(0, len(urls), chunk)]
    if not chunks:
        return
    ex = ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="steerboard-download")
    try:
        futures = [ex.submit(fetch, us, lps) for us, lps in chunks]
        for fut, (us, lps) in zip(futures, chunks):
            fut.result()
            yield from zip(us, lps)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def staging_paths(urls: list[str], dest: str | Path) -> list[str]:
    """Distinct local file names in ``dest`` for ``urls`` (position and the object's own name)."""
    return [str(Path(dest) / f"{i:06d}-{u.rstrip('/').rsplit('/', 1)[-1]}") for i, u in enumerate(urls)]


def fetch(urls: list[str], local: list[str]) -> None:
    """Copy the objects ``urls`` to the local files ``local``: S3 objects through obstore when it can serve
    them (:func:`_obstore_fetch`), everything else as one batched ``fs.get`` per filesystem (s3fs fetches a
    batch's objects concurrently)."""
    rest = _obstore_fetch(urls, local)
    by_fs: dict[int, tuple[Any, list[str], list[str]]] = {}
    for u, lp in rest:
        fs, path = filesystem(u)
        entry = by_fs.setdefault(id(fs), (fs, [], []))
        entry[1].append(path)
        entry[2].append(lp)
    for fs, rpaths, lpaths in by_fs.values():
        fs.get(rpaths, lpaths)


_OBSTORES: dict[tuple[str, ...], Any] = {}
_OBSTORES_LOCK = threading.Lock()
_OBSTORE_CONCURRENCY = 32


def _obstore_store(bucket: str) -> Any | None:
    """An obstore ``S3Store`` for ``bucket`` configured from the environment, or None when obstore should
    not serve it: obstore not installed, or the credentials are not in the environment (a profile, a
    credentials file or SSO are read by botocore only, so those stay with s3fs)."""
    if not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        return None
    try:
        from obstore.store import S3Store
    except ImportError:
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    key = (bucket, endpoint, os.environ["AWS_ACCESS_KEY_ID"], os.environ.get("AWS_DEFAULT_REGION", ""))
    with _OBSTORES_LOCK:
        if key not in _OBSTORES:
            # S3Store reads AWS_* (keys, session token, region, AWS_ENDPOINT_URL) itself; a plain-http endpoint
            # (a local or in-cluster server) must be allowed explicitly
            kwargs: dict[str, Any] = {"client_options": {"allow_http": True}} if endpoint.startswith("http://") else {}
            if os.environ.get("AWS_ENDPOINT_URL_S3"):
                kwargs["endpoint"] = os.environ["AWS_ENDPOINT_URL_S3"]
            _OBSTORES[key] = S3Store(bucket, **kwargs)
        return _OBSTORES[key]


def _obstore_fetch(urls: list[str], local: list[str]) -> list[tuple[str, str]]:
    """Download the ``s3://`` objects among ``urls`` with obstore, ``_OBSTORE_CONCURRENCY`` requests at a
    time; returns the (url, local path) pairs left for fsspec.

    Why not s3fs for these: s3fs goes through botocore, which spends about 1.5 ms of Python CPU per GET
    (building the user agent, signing, parsing headers; profiled), as much as the rest of reading a log.
    obstore (Rust's ``object_store`` crate, the client Apache Arrow and Polars use) does the same GETs at
    about 0.6 ms each (``benchmarks/scaleout.py``), which matters when ingest runs on the same few cores as
    its readers. Listing and everything else stays on s3fs.
    """
    pairs = list(zip(urls, local, strict=True))
    by_bucket: dict[str, list[tuple[str, str, str]]] = {}
    rest = []
    for u, lp in pairs:
        if protocol(u) not in ("s3", "s3a"):
            rest.append((u, lp))
            continue
        bucket, _, key = u.split("://", 1)[1].partition("/")
        by_bucket.setdefault(bucket, []).append((u, key, lp))
    work = []
    for bucket, items in by_bucket.items():
        store = _obstore_store(bucket)
        if store is None:
            rest.extend((u, lp) for u, _, lp in items)
        else:
            work.append((store, items))
    if work:
        import asyncio

        asyncio.run(_obstore_get_all(work))
    return rest


async def _obstore_get_all(work: list[tuple[Any, list[tuple[str, str, str]]]]) -> None:
    import asyncio

    import obstore

    gate = asyncio.Semaphore(_OBSTORE_CONCURRENCY)

    async def one(store: Any, url: str, key: str, lp: str) -> None:
        async with gate:
            try:
                data = await (await obstore.get_async(store, key)).bytes_async()
            except Exception as ex:  # noqa: BLE001 - one clear line naming the object
                raise _explain(url, ex, "cannot download") from ex
        with open(lp, "wb") as f:
            f.write(memoryview(data))

    await asyncio.gather(*(one(store, u, k, lp) for store, items in work for u, k, lp in items))


def check_writable(url: str, action: str = "cannot write to") -> None:
    """Write and delete a small probe object under ``url``, so a missing bucket, missing credentials or a
    read-only location fail before any work is done.

    Raises:
        StorageError: naming the setting to fix.
    """
    fs, path = filesystem(url)
    with waiting("a write check", url):
        _bucket_check(fs, url, path, action)
    probe = f"{path.rstrip('/')}/.steerboard-write-check-{os.getpid()}"
    try:
        with waiting("a write check", url):
            fs.pipe_file(probe, b"ok")
            fs.rm_file(probe)
    except Exception as ex:  # noqa: BLE001
        raise _explain(url, ex, action) from ex


def publish_dir(local: Path, url: str, last: str = "index.html", stale: Callable[[str], bool] | None = None) -> None:
    """Upload every file of the local folder ``local`` to ``url`` (``last`` uploaded last, so the pages it
    links exist by then), then delete the remote files that ``stale`` selects and were not uploaded.

    Args:
        local: Folder of freshly rendered files (flat).
        url: Destination URL.
        last: File name uploaded after all others.
        stale: Predicate on remote file names that may be deleted when not part of this upload.
    """
    fs, root = filesystem(url)
    root = root.rstrip("/")
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    order = [n for n in names if n != last] + ([last] if last in names else [])
    try:
        fs.put([str(local / n) for n in order if n != last], [f"{root}/{n}" for n in order if n != last])
        if last in names:
            fs.put_file(str(local / last), f"{root}/{last}")
        if stale is not None:
            existing = fs.ls(root, detail=False) if fs.exists(root) else []
            old = [p for p in existing if stale(p.rsplit("/", 1)[-1]) and p.rsplit("/", 1)[-1] not in names]
            if old:
                fs.rm(old)
    except Exception as ex:  # noqa: BLE001
        raise _explain(url, ex, "cannot publish the site to") from ex


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a local text file atomically: a temporary file beside it, flushed to disk, then renamed over it.

    A reader (or a full disk, or a kill) never leaves a partly written file at ``path``: it holds either the
    old content or the new. Parent folders are created.
    """
    import tempfile

    p = local_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, so strict JSON parsers accept it."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` with ``allow_nan=False`` (never a bare ``NaN``)."""
    import json

    kwargs.setdefault("default", str)
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_text(location: str, text: str) -> None:
    """Write a small text file to a local path (atomically, parent folders created) or an fsspec URL."""
    if not is_url(location):
        atomic_write_text(location, text)
        return
    fs, path = filesystem(location)
    try:
        with waiting("a write", location):
            fs.pipe_file(path, text.encode("utf-8"))
    except Exception as ex:  # noqa: BLE001
        raise _explain(location, ex, "cannot write") from ex


_SHARED_AWS_LOADER: Any = None


def share_aws_data_loader() -> bool:
    """Have every aiobotocore session this process creates share one botocore data loader.

    Inspect's S3 code creates a fresh aiobotocore session (``get_session()``) for each log read and each log
    flush, and every fresh session parses botocore's service and endpoint JSON files again: about 0.25 s of
    CPU each, a dozen times per (method, task) pair, which on a 2-core machine slowed a suite logging to S3
    by about a tenth (profiled: ``json.decoder.raw_decode`` under ``aiobotocore.session._create_client``).
    botocore's ``Loader`` caches what it parsed per instance, so one loader registered as every session's
    ``data_loader`` component parses each file once per process. Neither botocore nor Inspect offers a
    process-wide cache, hence this wrapper. Returns whether it is (now) installed; without aiobotocore (no
    S3 support installed) it does nothing.
    """
    global _SHARED_AWS_LOADER
    try:
        import aiobotocore.session as aio_session
        from botocore.loaders import create_loader
    except ImportError:
        return False
    if _SHARED_AWS_LOADER is not None:
        return True
    original = aio_session.get_session
    loader = create_loader()

    def get_session(env_vars: Any = None) -> Any:
        session = original(env_vars)
        if session.get_config_variable("data_path") is None:  # a custom data path keeps its own loader
            session.register_component("data_loader", loader)
        return session

    aio_session.get_session = get_session
    _SHARED_AWS_LOADER = loader
    return True
