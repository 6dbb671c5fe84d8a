"""A real PACS for tests: Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) on 127.0.0.1.

Started on a free port with its own storage folder, the DICOM (C-STORE) server off, the
DICOMweb plugin on; stopped by PID. Missing packages are an error, never a skip: the proof of
the DICOMweb source and service needs a real PACS (`apt-get install orthanc orthanc-dicomweb`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import requests

from .s3server import stop_process_group

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "pacs-test", "pacs-test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_orthanc() -> None:
    missing = [p for p in (ORTHANC, PLUGIN) if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"Orthanc is not installed ({', '.join(missing)} missing): "
                           "apt-get install -y orthanc orthanc-dicomweb (as .ci/run does)")


class Orthanc:
    def __init__(self, workdir: Path, servers: dict | None = None):
        require_orthanc()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.auth = (USER, PASSWORD)
        self.config = workdir / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "lowrank-test", "HttpPort": self.port, "HttpBindAddress": "127.0.0.1",
            "DicomServerEnabled": False, "StorageDirectory": str(workdir / "db"),
            "IndexDirectory": str(workdir / "db"), "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "HttpsVerifyPeers": False, "Plugins": [PLUGIN], "StableAge": 1,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": servers or {},
                         "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        log = open(self.workdir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited early: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=2).ok:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, 20)
        self.proc = None

    # the REST API (Orthanc's own, not DICOMweb): uploads and checks
    def upload(self, data: bytes) -> dict:
        r = requests.post(f"{self.url}/instances", data=data, auth=self.auth, timeout=60)
        r.raise_for_status()
        return r.json()

    def rest(self, method: str, path: str, **kw):
        r = requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=120, **kw)
        r.raise_for_status()
        return r


@contextlib.contextmanager
def orthanc(workdir: Path, servers: dict | None = None) -> Iterator[Orthanc]:
    server = Orthanc(workdir, servers)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir / "db", ignore_errors=True)
