"""The archive as a read-only DICOMweb service (QIDO-RS, WADO-RS) on Ray Serve.

query.py (QIDO matching), negotiate.py (Accept headers), render.py (windowed PNG/JPEG) and
index.py (UIDs -> archived images) are pure; service.py answers one request from them and the
archive; app.py is the Ray Serve deployment and its start-up.
"""
