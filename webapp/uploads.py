"""Uploaded CSV files: present, UTF-8, or a clear 400."""

from __future__ import annotations

from flask import request

from webapp.errors import BadRequest


def uploaded_text(field: str, missing: str) -> tuple[str, str]:
    """The text and the file name of the file uploaded as ``field``; ``missing`` is the message when no file was chosen."""
    upload = request.files.get(field)
    if upload is None or not upload.filename:
        raise BadRequest(missing)
    try:
        return upload.read().decode("utf-8-sig"), upload.filename
    except UnicodeDecodeError:
        raise BadRequest("the file is not UTF-8 text; export it as CSV (UTF-8)") from None
