"""xAPI Attachments in transit: multipart/mixed requests and responses (no web framework).

Spec: xAPI 1.0.3 Communication 1.5 (Content Types) and Data 2.4.11 (Attachments); IEEE
9274.1.1 4.1.3 and 4.2.2.6. The multipart syntax is RFC 2046 5.1.1:

    multipart-body := [preamble CRLF] dash-boundary transport-padding CRLF body-part
                      *encapsulation close-delimiter transport-padding [CRLF epilogue]
    encapsulation  := delimiter transport-padding CRLF body-part
    delimiter      := CRLF dash-boundary          (the CRLF belongs to the delimiter)
    close-delimiter := delimiter "--"
    body-part      := MIME-part-headers [CRLF *OCTET]

Line breaks are CRLF only: a bare LF is not a line break here, so binary part contents are
never altered.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "AttachmentError",
    "AttachmentPart",
    "build_multipart_mixed",
    "iter_attachments",
    "match_attachments",
    "media_type",
    "parse_multipart_mixed",
    "require_file_urls",
]


@dataclass(frozen=True)
class AttachmentPart:
    sha2: str  # from the X-Experience-API-Hash header, lowercase hex
    content_type: str  # the part's Content-Type header; "" when the part had none
    data: bytes


class AttachmentError(ValueError):
    """A malformed attachment request; the message says exactly what is wrong (-> 400)."""


# RFC 2046 5.1.1: boundary := 0*69<bchars> bcharsnospace
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEX = re.compile(r"^[0-9a-f]+$")
# SHA-2 digests by hex length (Data 2.4.11: "sha2"; Communication 1.5.2.s4.b4 recommends
# SHA-256, SHA-384 or SHA-512). Truncated SHA-512 variants share the lengths of 224 and 256.
_SHA2_BY_HEX_LENGTH = {
    56: ("sha224", "sha512_224"),
    64: ("sha256", "sha512_256"),
    96: ("sha384",),
    128: ("sha512",),
}
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


def media_type(content_type: str) -> str:
    """The type/subtype of a Content-Type value, lowercased, parameters dropped."""
    return content_type.split(";", 1)[0].strip().lower()


def parse_multipart_mixed(
    body: bytes, content_type_header: str
) -> tuple[bytes, list[AttachmentPart]]:
    """Split a multipart/mixed Statement request (Communication 1.5.2.s2.b2).

    Returns the raw bytes of the first part (the Statement or Statements, which MUST be
    application/json) and one AttachmentPart per further part, in order, without duplicates
    (Communication 1.5.2.s2.b2.b5 allows sending each attachment's data once). Every further
    part MUST carry X-Experience-API-Hash and "Content-Transfer-Encoding: binary"; its bytes
    must hash to the declared SHA-2 value. Raises AttachmentError on any malformation.
    """
    boundary = _boundary_from_header(content_type_header)
    raw_parts = _split_body(body, boundary.encode("latin-1"))
    if not raw_parts:
        raise AttachmentError(
            "the multipart/mixed body has no parts; the first part must hold the statements"
        )
    statements = _statements_part(*_split_part(raw_parts[0], 1))
    parts: list[AttachmentPart] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_parts[1:], start=2):
        part = _attachment_part(*_split_part(raw, index), index)
        if part.sha2 not in seen:
            seen.add(part.sha2)
            parts.append(part)
    return statements, parts


def _boundary_from_header(header: str) -> str:
    if not isinstance(header, str) or not header.strip():
        raise AttachmentError("missing Content-Type header; expected multipart/mixed")
    kind, _, params = header.partition(";")
    if media_type(kind) != "multipart/mixed":
        raise AttachmentError(
            f"Content-Type is {media_type(kind)!r}; attachments need multipart/mixed"
        )
    boundary = _parameters(params).get("boundary")
    if boundary is None:
        raise AttachmentError("the multipart/mixed Content-Type header has no boundary parameter")
    if not _BOUNDARY.match(boundary):
        raise AttachmentError(
            f"invalid multipart boundary {boundary!r}: RFC 2046 allows 1 to 70 characters from "
            "letters, digits and '()+_,-./:=? and space, not ending in a space"
        )
    return boundary


def _parameters(text: str) -> dict[str, str]:
    """Content-Type parameters (RFC 2045 5.1): names case-insensitive, values maybe quoted."""
    params: dict[str, str] = {}
    pos, length = 0, len(text)
    while pos < length:
        while pos < length and text[pos] in " \t;":
            pos += 1
        if pos >= length:
            break
        eq = text.find("=", pos)
        if eq == -1:
            raise AttachmentError(f"malformed Content-Type parameter {text[pos:].strip()!r}")
        name = text[pos:eq].strip().lower()
        if not _TOKEN.match(name):
            raise AttachmentError(f"malformed Content-Type parameter name {name!r}")
        pos = eq + 1
        while pos < length and text[pos] in " \t":
            pos += 1
        if pos < length and text[pos] == '"':
            value_chars: list[str] = []
            pos += 1
            while True:
                if pos >= length:
                    raise AttachmentError(f"unterminated quoted value for parameter {name!r}")
                char = text[pos]
                if char == "\\" and pos + 1 < length:
                    value_chars.append(text[pos + 1])
                    pos += 2
                elif char == '"':
                    pos += 1
                    break
                else:
                    value_chars.append(char)
                    pos += 1
            value = "".join(value_chars)
        else:
            end = text.find(";", pos)
            end = length if end == -1 else end
            value = text[pos:end].strip()
            pos = end
        if name in params:
            raise AttachmentError(f"Content-Type parameter {name!r} is given more than once")
        params[name] = value
    return params


def _split_body(body: bytes, boundary: bytes) -> list[bytes]:
    dash_boundary = b"--" + boundary
    delimiter = b"\r\n" + dash_boundary
    if body.startswith(dash_boundary):
        pos = len(dash_boundary)
    else:
        found = body.find(delimiter)
        if found == -1:
            raise AttachmentError(
                "the body never contains the boundary declared in the Content-Type header "
                "(a boundary line is CRLF, '--', then the boundary)"
            )
        pos = found + len(delimiter)
    if body.startswith(b"--", pos):
        return []
    pos = _end_of_boundary_line(body, pos)
    parts: list[bytes] = []
    while True:
        found = body.find(delimiter, pos)
        if found == -1:
            raise AttachmentError(
                "the multipart body does not end with a closing boundary ('--' boundary '--')"
            )
        parts.append(body[pos:found])
        pos = found + len(delimiter)
        if body.startswith(b"--", pos):
            return parts  # close-delimiter; the epilogue is ignored (RFC 2046 5.1.1)
        pos = _end_of_boundary_line(body, pos)


def _end_of_boundary_line(body: bytes, pos: int) -> int:
    """Skip transport padding and the CRLF that must end a boundary line."""
    while pos < len(body) and body[pos] in b" \t":
        pos += 1
    if pos >= len(body):
        raise AttachmentError(
            "the multipart body does not end with a closing boundary ('--' boundary '--')"
        )
    if not body.startswith(b"\r\n", pos):
        raise AttachmentError(
            "a boundary line is followed by other characters; the boundary must not appear "
            "inside a part and boundary lines end with CRLF"
        )
    return pos + 2


def _split_part(raw: bytes, index: int) -> tuple[dict[str, str], bytes]:
    if raw.startswith(b"\r\n"):
        return {}, raw[2:]
    end = raw.find(b"\r\n\r\n")
    if end == -1:
        if b"\n\n" in raw:
            raise AttachmentError(f"part {index}: header lines must end with CRLF, not LF")
        raise AttachmentError(f"part {index}: no empty line (CRLF CRLF) after the part headers")
    return _headers(raw[:end], index), raw[end + 4 :]


def _headers(block: bytes, index: int) -> dict[str, str]:
    lines: list[str] = []
    for line in block.decode("latin-1").split("\r\n"):
        if "\r" in line or "\n" in line:
            raise AttachmentError(f"part {index}: header lines must end with CRLF")
        if line[:1] in (" ", "\t") and lines:  # folded header line (RFC 5322 2.2.3)
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise AttachmentError(f"part {index}: malformed header line {line!r}")
        key = name.lower()
        if key in headers:
            raise AttachmentError(f"part {index}: header {name} is given more than once")
        headers[key] = value.strip()
    return headers


def _statements_part(headers: dict[str, str], content: bytes) -> bytes:
    content_type = headers.get("content-type")
    if content_type is None:
        raise AttachmentError(
            "the first part (the statements) has no Content-Type header; it must be "
            "application/json"
        )
    if media_type(content_type) != "application/json":
        raise AttachmentError(
            f"the first part must be application/json (the statements), "
            f"not {media_type(content_type)!r}"
        )
    encoding = headers.get("content-transfer-encoding")
    if encoding is not None and encoding.lower() not in _IDENTITY_ENCODINGS:
        raise AttachmentError(
            f"the first part has Content-Transfer-Encoding {encoding!r}; only binary, 8bit "
            "or 7bit can be read"
        )
    return content


def _attachment_part(headers: dict[str, str], content: bytes, index: int) -> AttachmentPart:
    declared = headers.get("x-experience-api-hash")
    if not declared:
        raise AttachmentError(f"part {index} has no X-Experience-API-Hash header")
    encoding = headers.get("content-transfer-encoding")
    if encoding is None:
        raise AttachmentError(
            f"part {index} has no Content-Transfer-Encoding header; it must be binary"
        )
    if encoding.lower() != "binary":
        raise AttachmentError(
            f"part {index} has Content-Transfer-Encoding {encoding!r}; it must be binary"
        )
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(content)):
        raise AttachmentError(
            f"part {index}: Content-Length {length!r} does not match its {len(content)} bytes"
        )
    sha2 = declared.lower()
    _check_digest(sha2, content, f"part {index}")
    return AttachmentPart(sha2=sha2, content_type=headers.get("content-type", ""), data=content)


def _check_digest(sha2: str, data: bytes, where: str) -> None:
    algorithms = _SHA2_BY_HEX_LENGTH.get(len(sha2))
    if algorithms is None or not _HEX.match(sha2):
        raise AttachmentError(
            f"{where}: X-Experience-API-Hash {sha2!r} is not a hex SHA-2 digest "
            "(SHA-224, SHA-256, SHA-384 or SHA-512)"
        )
    for name in algorithms:
        if hashlib.new(name, data).hexdigest() == sha2:
            return
    raise AttachmentError(
        f"{where}: the data does not match its X-Experience-API-Hash {sha2} "
        f"(its SHA-256 is {hashlib.sha256(data).hexdigest()})"
    )


# --- statements vs parts ---------------------------------------------------------------------


def iter_attachments(statements: list[dict]) -> Iterator[tuple[str, dict]]:
    """Every Attachment Object of the statements and their SubStatements, with where it is.

    Raises AttachmentError when "attachments" is not a list of objects.
    """
    for number, statement in enumerate(statements, start=1):
        if not isinstance(statement, dict):
            continue
        yield from _attachments_of(statement, f"statement {number}")
        obj = statement.get("object")
        if isinstance(obj, dict) and obj.get("objectType") == "SubStatement":
            yield from _attachments_of(obj, f"statement {number} (SubStatement)")


def _attachments_of(owner: dict, where: str) -> Iterator[tuple[str, dict]]:
    attachments = owner.get("attachments")
    if attachments is None:
        return
    if not isinstance(attachments, list):
        raise AttachmentError(f"{where}: attachments must be an array")
    for position, attachment in enumerate(attachments, start=1):
        if not isinstance(attachment, dict):
            raise AttachmentError(f"{where}: attachment {position} is not an object")
        yield f"{where}, attachment {position}", attachment


def _sha2_of(attachment: dict, where: str) -> str:
    sha2 = attachment.get("sha2")
    if not isinstance(sha2, str) or not sha2:
        raise AttachmentError(f"{where} has no sha2")
    return sha2.lower()


def match_attachments(
    statements: list[dict], parts: list[AttachmentPart]
) -> dict[str, AttachmentPart]:
    """Pair the Attachment Objects of a multipart/mixed request with its parts, by SHA-2 only
    (Communication 1.5.2.s1.b4: "It MUST not do so any other way").

    * every Attachment Object without a fileUrl MUST have a part with its sha2
      (Communication 1.5.2.s3.b5);
    * every part MUST be the data of some Attachment Object (with or without fileUrl); a part
      that no statement declares is an excess part (rejected, conformance test XAPI-00128);
    * where both give it, the part's Content-Type MUST have the media type of the attachment's
      contentType (Communication 1.5.2.s2.b2.b7; parameters such as charset are not compared).

    Returns the parts by (lowercase) sha2.
    """
    by_sha2 = {part.sha2.lower(): part for part in parts}
    referenced: set[str] = set()
    for where, attachment in iter_attachments(statements):
        sha2 = _sha2_of(attachment, where)
        part = by_sha2.get(sha2)
        if part is None:
            if not attachment.get("fileUrl"):
                raise AttachmentError(
                    f"{where} (sha2 {sha2}) has no fileUrl and no multipart part with that "
                    "X-Experience-API-Hash"
                )
            continue
        referenced.add(sha2)
        declared = attachment.get("contentType")
        if (
            part.content_type
            and isinstance(declared, str)
            and media_type(declared) != media_type(part.content_type)
        ):
            raise AttachmentError(
                f"{where} declares contentType {declared!r} but its part (sha2 {sha2}) has "
                f"Content-Type {part.content_type!r}"
            )
    for sha2 in by_sha2:
        if sha2 not in referenced:
            raise AttachmentError(
                f"the part with X-Experience-API-Hash {sha2} is not the data of any attachment "
                "declared in the statements"
            )
    return by_sha2


def require_file_urls(statements: list[dict]) -> None:
    """A Statement request sent as application/json MUST give a fileUrl for every Attachment
    (Communication 1.5.2.s2.b1; IEEE 9274.1.1 4.1.3), since it cannot carry attachment data.
    """
    for where, attachment in iter_attachments(statements):
        file_url = attachment.get("fileUrl")
        if not isinstance(file_url, str) or not file_url:
            raise AttachmentError(
                f"{where} has no fileUrl: send its data as a multipart/mixed request, or give "
                "a fileUrl"
            )


# --- responses ---------------------------------------------------------------------------------


def build_multipart_mixed(statement_json: bytes, parts: list[AttachmentPart]) -> tuple[bytes, str]:
    """The multipart/mixed body for GET /statements?attachments=true (Communication 1.5.2.s3.b1).

    The first part is the statement JSON (application/json); then one part per distinct sha2
    with Content-Type (application/octet-stream if unknown), "Content-Transfer-Encoding:
    binary" and X-Experience-API-Hash. Returns (body, Content-Type header value); the boundary
    is random and appears in no part.
    """
    unique: dict[str, AttachmentPart] = {}
    for part in parts:
        for value in (part.sha2, part.content_type):
            if "\r" in value or "\n" in value:
                raise AttachmentError("attachment header values must not contain CR or LF")
        unique.setdefault(part.sha2.lower(), part)
    payloads = [statement_json, *(p.data for p in unique.values())]
    while True:
        boundary = "xapi-" + secrets.token_hex(16)
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in payload for payload in payloads):
            break
    chunks = [marker, b"\r\nContent-Type: application/json\r\n\r\n", statement_json]
    for sha2, part in unique.items():
        headers = (
            f"Content-Type: {part.content_type or 'application/octet-stream'}\r\n"
            "Content-Transfer-Encoding: binary\r\n"
            f"X-Experience-API-Hash: {sha2}\r\n"
        )
        chunks += [b"\r\n", marker, b"\r\n", headers.encode("utf-8"), b"\r\n", part.data]
    chunks += [b"\r\n", marker, b"--\r\n"]
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"
