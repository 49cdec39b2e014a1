"""Attachments in multipart/mixed requests (xAPI 1.0.3 Communication 1.5.2, Data 2.4.11;
IEEE 9274.1.1 4.1.3) and RFC 2046 multipart syntax."""

import hashlib
import json

import pytest

from lrs.xapi.attachments import (
    AttachmentError,
    AttachmentPart,
    build_multipart_mixed,
    match_attachments,
    parse_multipart_mixed,
    require_file_urls,
)

TEXT = b"here is a simple attachment"
TEXT_SHA = hashlib.sha256(TEXT).hexdigest()  # the spec's example: 495395e7...848a
BOUNDARY = "abcABC0123'()+_,-./:=?"
HEADER = f'multipart/mixed; boundary="{BOUNDARY}"'


def statement(*attachments: dict) -> dict:
    return {
        "actor": {"mbox": "mailto:sample.agent@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": "http://www.example.com/tincan/activities/multipart"},
        "attachments": list(attachments),
    }


def attachment(sha2: str = TEXT_SHA, content_type: str = "text/plain", **extra: object) -> dict:
    return {
        "usageType": "http://example.com/attachment-usage/test",
        "display": {"en-US": "A test attachment"},
        "contentType": content_type,
        "length": len(TEXT),
        "sha2": sha2,
        **extra,
    }


def body(*parts: bytes, boundary: str = BOUNDARY, preamble: bytes = b"") -> bytes:
    dash = b"--" + boundary.encode()
    out = preamble + dash
    for part in parts:
        out += b"\r\n" + part + b"\r\n" + dash
    return out + b"--\r\n"


def json_part(payload: object) -> bytes:
    return b"Content-Type: application/json\r\n\r\n" + json.dumps(payload).encode()


def data_part(data: bytes = TEXT, sha2: str = TEXT_SHA, **headers: str) -> bytes:
    fields = {
        "Content-Type": "text/plain",
        "Content-Transfer-Encoding": "binary",
        "X-Experience-API-Hash": sha2,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    lines = "".join(f"{k}:{v}\r\n" for k, v in fields.items() if v is not None)
    return lines.encode() + b"\r\n" + data


def test_spec_example_parses():
    """Communication 1.5.2.s6: the spec's own example (quoted boundary, leading CRLF)."""
    stmt = statement(attachment(content_type="text/plain; charset=ascii"))
    raw = body(json_part(stmt), data_part(), preamble=b"\r\n")
    statements, parts = parse_multipart_mixed(raw, HEADER)
    assert json.loads(statements) == stmt
    assert parts == [AttachmentPart(sha2=TEXT_SHA, content_type="text/plain", data=TEXT)]
    assert match_attachments([stmt], parts) == {TEXT_SHA: parts[0]}


def test_binary_data_with_crlf_and_lf_is_kept_exactly():
    """RFC 2046 5.1.1: the CRLF before a boundary belongs to the boundary, nothing else."""
    data = bytes(range(256)) + b"\r\n\n\r\r\n--abc\r\n"
    sha = hashlib.sha256(data).hexdigest()
    raw = body(json_part(statement(attachment(sha))), data_part(data, sha), boundary="xyz")
    _, parts = parse_multipart_mixed(raw, "multipart/mixed; boundary=xyz")
    assert parts[0].data == data


def test_boundary_parameter_is_case_insensitive_and_padding_is_allowed():
    raw = body(json_part([]), boundary="b1").replace(b"--b1\r\n", b"--b1 \t\r\n", 1)
    statements, parts = parse_multipart_mixed(raw, "Multipart/Mixed ;BOUNDARY=b1")
    assert json.loads(statements) == [] and parts == []


def test_statements_only_multipart_is_accepted():
    """Communication 1.5.2.s3.b8: multipart/mixed batches without attachments are accepted."""
    statements, parts = parse_multipart_mixed(body(json_part([statement()])), HEADER)
    assert parts == []
    assert match_attachments(json.loads(statements), parts) == {}


def test_sha384_and_sha512_hashes_are_accepted():
    """Communication 1.5.2.s4.b4: SHA-256, SHA-384 or SHA-512."""
    for algorithm in ("sha384", "sha512"):
        sha = hashlib.new(algorithm, TEXT).hexdigest()
        _, parts = parse_multipart_mixed(body(json_part({}), data_part(sha2=sha)), HEADER)
        assert parts[0].sha2 == sha


def test_uppercase_hash_header_is_normalized():
    raw = body(json_part({}), data_part(sha2=TEXT_SHA.upper()))
    _, parts = parse_multipart_mixed(raw, HEADER)
    assert parts[0].sha2 == TEXT_SHA


def test_duplicate_parts_are_kept_once():
    """Communication 1.5.2.s2.b2.b5: one copy of data used by several statements."""
    raw = body(json_part({}), data_part(), data_part())
    _, parts = parse_multipart_mixed(raw, HEADER)
    assert len(parts) == 1


def test_part_without_content_type_has_empty_content_type():
    """Communication 1.5.2.s2.b2.b6: Content-Type on attachment parts is only a SHOULD."""
    raw = body(json_part({}), data_part(Content_Type=None))
    _, parts = parse_multipart_mixed(raw, HEADER)
    assert parts[0].content_type == ""


def test_missing_hash_header_is_rejected():
    """Communication 1.5.2.s2.b2.b3: X-Experience-API-Hash in each part after the first."""
    raw = body(json_part({}), data_part(X_Experience_API_Hash=None))
    with pytest.raises(AttachmentError, match="part 2 has no X-Experience-API-Hash"):
        parse_multipart_mixed(raw, HEADER)


def test_wrong_hash_is_rejected():
    """Communication 1.5.2.s1.b4: data is matched by the SHA-2 of its raw bytes."""
    raw = body(json_part({}), data_part(sha2=hashlib.sha256(b"other").hexdigest()))
    with pytest.raises(AttachmentError, match="does not match its X-Experience-API-Hash"):
        parse_multipart_mixed(raw, HEADER)


def test_hash_that_is_not_a_sha2_digest_is_rejected():
    raw = body(json_part({}), data_part(sha2=hashlib.sha1(TEXT).hexdigest()))
    with pytest.raises(AttachmentError, match="not a hex SHA-2 digest"):
        parse_multipart_mixed(raw, HEADER)


def test_missing_or_wrong_transfer_encoding_is_rejected():
    """Communication 1.5.2.s2.b2.b4: Content-Transfer-Encoding: binary after the first part."""
    missing = body(json_part({}), data_part(Content_Transfer_Encoding=None))
    with pytest.raises(AttachmentError, match="no Content-Transfer-Encoding"):
        parse_multipart_mixed(missing, HEADER)
    base64_part = body(json_part({}), data_part(Content_Transfer_Encoding="base64"))
    with pytest.raises(AttachmentError, match="must be binary"):
        parse_multipart_mixed(base64_part, HEADER)


def test_content_length_header_must_match_the_data():
    raw = body(json_part({}), data_part(Content_Length="5"))
    with pytest.raises(AttachmentError, match="Content-Length"):
        parse_multipart_mixed(raw, HEADER)


def test_first_part_must_be_application_json():
    """Communication 1.5.2.s2.b2.b1 and b6: the first part is the statements, application/json."""
    wrong = body(data_part(), json_part({}))
    with pytest.raises(AttachmentError, match="first part must be application/json"):
        parse_multipart_mixed(wrong, HEADER)
    untyped = body(b"\r\n{}")
    with pytest.raises(AttachmentError, match="no Content-Type header"):
        parse_multipart_mixed(untyped, HEADER)
    charset = body(b"Content-Type: application/json; charset=utf-8\r\n\r\n{}")
    assert parse_multipart_mixed(charset, HEADER)[0] == b"{}"


def test_missing_boundary_parameter_is_rejected():
    """RFC 2046 5.1.1: the boundary parameter is required for multipart."""
    with pytest.raises(AttachmentError, match="no boundary parameter"):
        parse_multipart_mixed(body(json_part({})), "multipart/mixed")


def test_invalid_boundary_and_wrong_media_type_are_rejected():
    with pytest.raises(AttachmentError, match="invalid multipart boundary"):
        parse_multipart_mixed(b"", "multipart/mixed; boundary=" + "x" * 71)
    with pytest.raises(AttachmentError, match="multipart/mixed"):
        parse_multipart_mixed(body(json_part({})), "application/json")
    with pytest.raises(AttachmentError, match="missing Content-Type"):
        parse_multipart_mixed(body(json_part({})), "")


def test_body_without_the_declared_boundary_is_rejected():
    with pytest.raises(AttachmentError, match="never contains the boundary"):
        parse_multipart_mixed(body(json_part({}), boundary="other"), HEADER)


def test_body_without_closing_boundary_is_rejected():
    raw = body(json_part({})).removesuffix(b"--\r\n")
    with pytest.raises(AttachmentError, match="closing boundary"):
        parse_multipart_mixed(raw, HEADER)


def test_body_with_no_parts_is_rejected():
    with pytest.raises(AttachmentError, match="no parts"):
        parse_multipart_mixed(body(), HEADER)


def test_boundary_inside_a_part_is_rejected():
    """RFC 2046 5.1.1: the boundary must not appear as the prefix of a line inside a part."""
    raw = body(json_part({}) + b"\r\n--" + BOUNDARY.encode() + b"X trailing")
    with pytest.raises(AttachmentError, match="must not appear inside a part"):
        parse_multipart_mixed(raw, HEADER)


def test_lf_only_line_breaks_are_rejected():
    """RFC 2046: line breaks in multipart bodies are CRLF."""
    raw = body(json_part({})).replace(b"\r\n", b"\n")
    with pytest.raises(AttachmentError):
        parse_multipart_mixed(raw, HEADER)
    headers_lf = body(b"Content-Type: application/json\n\n{}")
    with pytest.raises(AttachmentError, match="CRLF"):
        parse_multipart_mixed(headers_lf, HEADER)


def test_malformed_part_headers_are_rejected():
    no_colon = body(json_part({}), b"Content-Type text/plain\r\n\r\n" + TEXT)
    with pytest.raises(AttachmentError, match="malformed header line"):
        parse_multipart_mixed(no_colon, HEADER)
    twice = body(json_part({}), data_part(X_Experience_API_Hash=TEXT_SHA) + b"")
    twice = twice.replace(
        b"Content-Type:text/plain\r\n", b"Content-Type:text/plain\r\nContent-Type:text/x\r\n"
    )
    with pytest.raises(AttachmentError, match="more than once"):
        parse_multipart_mixed(twice, HEADER)
    no_blank_line = body(json_part({}), b"X-Experience-API-Hash: " + TEXT_SHA.encode())
    with pytest.raises(AttachmentError, match="no empty line"):
        parse_multipart_mixed(no_blank_line, HEADER)


def test_part_not_referenced_by_any_statement_is_rejected():
    """Conformance XAPI-00128: excess multipart sections that are not attachments -> 400."""
    _, parts = parse_multipart_mixed(body(json_part({}), data_part()), HEADER)
    with pytest.raises(AttachmentError, match="not the data of any attachment"):
        match_attachments([statement()], parts)


def test_declared_attachment_without_part_or_file_url_is_rejected():
    """Communication 1.5.2.s3.b5: attachments that neither have a fileUrl nor match a part."""
    with pytest.raises(AttachmentError, match=r"statement 1, attachment 1 \(sha2"):
        match_attachments([statement(attachment())], [])


def test_declared_attachment_with_file_url_needs_no_part():
    """Communication 1.5.2.s3.b9: attachments with only a fileUrl are accepted."""
    stmt = statement(attachment(fileUrl="http://example.com/file.txt"))
    assert match_attachments([stmt], []) == {}


def test_part_for_an_attachment_with_file_url_is_referenced():
    """A part may carry the data of an attachment that also has a fileUrl."""
    stmt = statement(attachment(fileUrl="http://example.com/file.txt"))
    part = AttachmentPart(TEXT_SHA, "text/plain", TEXT)
    assert match_attachments([stmt], [part]) == {TEXT_SHA: part}


def test_substatement_attachments_are_matched():
    """Data 2.4.4.3 / IEEE 4.2.2.3: a SubStatement may have attachments."""
    sub = statement()
    del sub["attachments"]
    sub["object"] = {
        "objectType": "SubStatement",
        "actor": {"mbox": "mailto:a@example.com"},
        "verb": {"id": "http://example.com/verbs/v"},
        "object": {"id": "http://example.com/a"},
        "attachments": [attachment()],
    }
    part = AttachmentPart(TEXT_SHA, "text/plain", TEXT)
    assert match_attachments([sub], [part]) == {TEXT_SHA: part}
    with pytest.raises(AttachmentError, match="SubStatement"):
        match_attachments([sub], [])
    with pytest.raises(AttachmentError, match="SubStatement"):
        require_file_urls([sub])


def test_one_part_may_serve_several_statements():
    part = AttachmentPart(TEXT_SHA, "text/plain", TEXT)
    result = match_attachments([statement(attachment()), statement(attachment())], [part])
    assert result == {TEXT_SHA: part}


def test_content_type_of_part_must_match_attachment_media_type():
    """Communication 1.5.2.s2.b2.b7: parameters and properties that both exist must match."""
    stmt = statement(attachment(content_type="image/png"))
    with pytest.raises(AttachmentError, match="declares contentType 'image/png'"):
        match_attachments([stmt], [AttachmentPart(TEXT_SHA, "text/plain", TEXT)])
    assert match_attachments([stmt], [AttachmentPart(TEXT_SHA, "", TEXT)])


def test_malformed_attachments_property_is_rejected():
    with pytest.raises(AttachmentError, match="must be an array"):
        match_attachments([{"attachments": {}}], [])
    with pytest.raises(AttachmentError, match="is not an object"):
        match_attachments([{"attachments": ["x"]}], [])
    with pytest.raises(AttachmentError, match="has no sha2"):
        match_attachments([{"attachments": [{"fileUrl": "http://x.org/f"}]}], [])


def test_application_json_requires_file_urls():
    """Communication 1.5.2.s2.b1: application/json requests need a fileUrl on every attachment."""
    require_file_urls([statement(attachment(fileUrl="http://example.com/f")), statement()])
    with pytest.raises(AttachmentError, match="statement 2, attachment 1 has no fileUrl"):
        require_file_urls([statement(), statement(attachment())])


def test_build_then_parse_round_trip():
    """Communication 1.5.2.s3.b1: GET ?attachments=true uses the same transmission format."""
    png = bytes(range(256)) * 4
    parts = [
        AttachmentPart(TEXT_SHA, "text/plain", TEXT),
        AttachmentPart(hashlib.sha256(png).hexdigest(), "", png),
        AttachmentPart(TEXT_SHA, "text/plain", TEXT),
    ]
    statement_json = json.dumps({"statements": [], "more": ""}).encode()
    raw, content_type = build_multipart_mixed(statement_json, parts)
    assert content_type.startswith("multipart/mixed; boundary=")
    assert raw.endswith(b"--\r\n")
    statements, parsed = parse_multipart_mixed(raw, content_type)
    assert statements == statement_json
    assert parsed == [
        parts[0],
        AttachmentPart(parts[1].sha2, "application/octet-stream", png),
    ]


def test_build_uses_a_fresh_boundary_not_found_in_the_data(monkeypatch):
    _, first = build_multipart_mixed(b"[]", [])
    _, second = build_multipart_mixed(b"[]", [])
    assert first != second
    tokens = iter(["clash", "fresh"])
    monkeypatch.setattr("lrs.xapi.attachments.secrets.token_hex", lambda _n: next(tokens))
    raw, content_type = build_multipart_mixed(b"data --xapi-clash here", [])
    assert content_type == "multipart/mixed; boundary=xapi-fresh"
    assert parse_multipart_mixed(raw, content_type)[0] == b"data --xapi-clash here"


def test_build_rejects_header_injection():
    with pytest.raises(AttachmentError):
        build_multipart_mixed(b"[]", [AttachmentPart(TEXT_SHA, "text/plain\r\nX: y", TEXT)])
