"""Credentials for a DICOMweb server: from the environment or a file, never from a URL or the
command line, and never written anywhere (records name the server by its URL alone).

Looked up in this order, in the process that makes the request (the driver lists, the Ray
workers fetch: on a cluster every node needs the variables or the file, as with S3 keys):
  1. LOWRANK_DICOMWEB_TOKEN                          -> Authorization: Bearer <token>
  2. LOWRANK_DICOMWEB_USER + LOWRANK_DICOMWEB_PASSWORD -> HTTP basic
  3. the JSON file named by LOWRANK_DICOMWEB_CREDENTIALS, else $LOWRANK_HOME/dicomweb-credentials.json:
     {"token": ...} or {"username": ..., "password": ...}, or such objects keyed by "host:port"
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidParameterError

TOKEN_ENV, USER_ENV, PASSWORD_ENV = "LOWRANK_DICOMWEB_TOKEN", "LOWRANK_DICOMWEB_USER", "LOWRANK_DICOMWEB_PASSWORD"
FILE_ENV = "LOWRANK_DICOMWEB_CREDENTIALS"


def _default_file() -> Path:
    home = Path(os.environ.get("LOWRANK_HOME") or Path.home() / ".cache" / "lowrank_batch")
    return home / "dicomweb-credentials.json"


def _from_entry(entry: dict, where: str) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise InvalidParameterError(f"{where}: credentials must be a JSON object")
    if entry.get("token"):
        return {"Authorization": f"Bearer {entry['token']}"}
    if entry.get("username") is not None and entry.get("password") is not None:
        return {"Authorization": _basic(str(entry["username"]), str(entry["password"]))}
    raise InvalidParameterError(f"{where}: expected \"token\" or \"username\" and \"password\"")


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_headers(url: str) -> dict[str, str]:
    """The Authorization header for requests to `url`'s server ({} when none is configured)."""
    if os.environ.get(TOKEN_ENV):
        return {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    if os.environ.get(USER_ENV) is not None and os.environ.get(PASSWORD_ENV) is not None:
        return {"Authorization": _basic(os.environ[USER_ENV], os.environ[PASSWORD_ENV])}
    named = os.environ.get(FILE_ENV)
    path = Path(named) if named else _default_file()
    if not path.is_file():
        if named:
            raise InvalidParameterError(f"{FILE_ENV} names {path}, which is not a file")
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # never quote the file: it holds secrets
        raise InvalidParameterError(f"cannot read the DICOMweb credentials file {path} "
                                    f"({type(exc).__name__})") from None
    if isinstance(data, dict) and not {"token", "username"} & set(data):
        server = urlsplit(url).netloc
        if server not in data:
            return {}
        return _from_entry(data[server], f"{path} [{server}]")
    return _from_entry(data, str(path))
