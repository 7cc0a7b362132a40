"""Per-session file routes: upload, list, download, delete."""

from __future__ import annotations

from typing import AsyncIterator
from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import BadHttpMessage

from agentic import keys
from agentic.web.errors import ApiError
from agentic.api.requests import live_session

routes = web.RouteTableDef()

MAX_BOUNDARY_CHARS = 70  # RFC 2046


@routes.post("/sessions/{session_id}/files", name="files_upload")
async def upload_files(request: web.Request) -> web.Response:
    record = live_session(request)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "multipart_required", "upload files as multipart/form-data")
    uploads = request.app[keys.uploads_key]
    limit = uploads.settings.max_file_bytes * uploads.settings.max_files_per_upload
    if request.content_length is not None and request.content_length > limit + 1024 * 1024:
        raise ApiError(413, "upload_too_large", f"an upload carries at most {limit} bytes")
    boundary = parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters.get("boundary", "")
    if not 0 < len(boundary) <= MAX_BOUNDARY_CHARS:
        raise ApiError(400, "invalid_multipart", f"a multipart upload needs a boundary of 1 to {MAX_BOUNDARY_CHARS} characters")
    try:
        files = await uploads.receive(record, _file_parts(await request.multipart()))
    except (ValueError, BadHttpMessage):  # what aiohttp's multipart parser raises on a malformed body
        raise ApiError(400, "invalid_multipart", "the multipart body is malformed (boundaries or part headers)") from None
    return web.json_response({"files": [f.to_json() for f in files]}, status=201)


async def _file_parts(reader: MultipartReader) -> AsyncIterator[BodyPartReader]:
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a multipart nested in the upload
            raise ApiError(422, "invalid_field", "every part of the upload must be a file")
        yield part


@routes.get("/sessions/{session_id}/files", name="files_list")
async def list_files(request: web.Request) -> web.Response:
    record = live_session(request)
    return web.json_response({"files": [f.to_json() for f in record.files.values()]})


@routes.get("/sessions/{session_id}/files/{name}", name="file_download")
async def download_file(request: web.Request) -> web.FileResponse:
    record = live_session(request)
    file, path = request.app[keys.uploads_key].path_of(record, request.match_info["name"])
    return web.FileResponse(path, headers={
        "Content-Type": file.content_type if file.content_type.startswith("application/") else "text/plain; charset=utf-8",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file.name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@routes.delete("/sessions/{session_id}/files/{name}", name="file_delete")
async def delete_file(request: web.Request) -> web.Response:
    record = live_session(request)
    name = request.match_info["name"]
    await request.app[keys.uploads_key].delete(record, name)
    return web.json_response({"deleted": name})

