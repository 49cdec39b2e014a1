"""Attachments over HTTP (xAPI 1.0.3 Communication 1.5.2 / Data 2.4.11, signed statements
Data 2.6): multipart/mixed in and out, sha2 matching, fileUrl-only attachments."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import LRS, statement

BOUNDARY = "xapi-test-boundary"


def multipart(statements: object, parts: list[tuple[bytes, str]]) -> tuple[bytes, str]:
    chunks = [
        f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n".encode(),
        json.dumps(statements).encode(),
        b"\r\n",
    ]
    for data, content_type in parts:
        digest = hashlib.sha256(data).hexdigest()
        chunks += [
            (
                f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n"
                "Content-Transfer-Encoding: binary\r\n"
                f"X-Experience-API-Hash: {digest}\r\n\r\n"
            ).encode(),
            data,
            b"\r\n",
        ]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), f'multipart/mixed; boundary="{BOUNDARY}"'


def attachment(data: bytes, content_type: str = "text/plain", **extra: object) -> dict:
    return {
        "usageType": "http://example.com/attachment-usage/test",
        "display": {"en-US": "A test attachment"},
        "contentType": content_type,
        "length": len(data),
        "sha2": hashlib.sha256(data).hexdigest(),
        **extra,
    }


async def test_multipart_statement_with_attachment_round_trips(lrs: LRS) -> None:
    """Communication 1.5.2: a statement with attachment data in multipart/mixed is stored, and
    GET with attachments=true returns multipart/mixed with the data, matched by sha2."""
    data = b"hello attachment \x00\x01\x02"
    body, content_type = multipart(
        statement(attachments=[attachment(data)]), [(data, "text/plain")]
    )
    response = await lrs.client.post(
        "/xapi/statements", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    (statement_id,) = response.json()
    fetched = await lrs.client.get(
        "/xapi/statements", params={"statementId": statement_id, "attachments": "true"}
    )
    assert fetched.status_code == 200
    assert fetched.headers["content-type"].startswith("multipart/mixed")
    assert data in fetched.content
    assert hashlib.sha256(data).hexdigest().encode() in fetched.content
    plain = await lrs.client.get("/xapi/statements", params={"statementId": statement_id})
    assert plain.headers["content-type"].startswith("application/json")


async def test_attachment_without_data_is_rejected(lrs: LRS) -> None:
    """Data 2.4.11: an attachment without fileUrl needs its data in the request (400)."""
    data = b"missing"
    response = await lrs.client.post(
        "/xapi/statements", json=statement(attachments=[attachment(data)])
    )
    assert response.status_code == 400
    assert (await lrs.client.get("/xapi/statements")).json()["statements"] == []


async def test_file_url_only_attachment_is_accepted_as_json(lrs: LRS) -> None:
    """Data 2.4.11: an attachment with a fileUrl may be sent without its data."""
    described = attachment(b"elsewhere", fileUrl="http://example.com/files/elsewhere.txt")
    response = await lrs.client.post("/xapi/statements", json=statement(attachments=[described]))
    assert response.status_code == 200


async def test_part_hash_mismatch_is_rejected(lrs: LRS) -> None:
    """Communication 1.5.2: a part whose content does not match its X-Experience-API-Hash (or no
    declared attachment) is rejected with 400; nothing is stored."""
    declared = attachment(b"declared")
    body, content_type = multipart(statement(attachments=[declared]), [(b"other", "text/plain")])
    response = await lrs.client.post(
        "/xapi/statements", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert (await lrs.client.get("/xapi/statements")).json()["statements"] == []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(payload: dict, key: rsa.RSAPrivateKey) -> bytes:
    header = _b64url(json.dumps({"alg": "RS256"}).encode())
    body = _b64url(json.dumps(payload).encode())
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{_b64url(signature)}".encode()


async def test_signed_statement_accepted_and_tampered_rejected(lrs: LRS) -> None:
    """Data 2.6: a signed statement whose JWS payload matches is stored; one whose payload does
    not match the statement is rejected with 400."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    original = statement(id="2f1f7b3a-6e39-4d53-8ad4-2f3b1c6f0a11")
    token = _sign(original, key)
    signed = {
        **original,
        "attachments": [
            attachment(
                token,
                "application/octet-stream",
                usageType="http://adlnet.gov/expapi/attachments/signature",
            )
        ],
    }
    body, content_type = multipart(signed, [(token, "application/octet-stream")])
    response = await lrs.client.post(
        "/xapi/statements", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text

    tampered_id = "2f1f7b3a-6e39-4d53-8ad4-2f3b1c6f0a12"
    failed = {"id": "http://adlnet.gov/expapi/verbs/failed"}
    tampered_token = _sign({**original, "id": tampered_id, "verb": failed}, key)
    tampered = {
        **original,
        "id": tampered_id,
        "attachments": [
            attachment(
                tampered_token,
                "application/octet-stream",
                usageType="http://adlnet.gov/expapi/attachments/signature",
            )
        ],
    }
    body, content_type = multipart(tampered, [(tampered_token, "application/octet-stream")])
    response = await lrs.client.post(
        "/xapi/statements", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
