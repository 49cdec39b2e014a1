"""Signed Statements (xAPI 1.0.3 Data 2.6; IEEE 9274.1.1 4.2.6).

Signature requirements the LRS validates (Data 2.6.s4, 2.6.s5.b3.b4):
  * the signature is an Attachment with usageType
    http://adlnet.gov/expapi/attachments/signature and contentType application/octet-stream
    (2.6.s4.b1);
  * it is a JWS (RFC 7515) in Compact Serialization (SHOULD* in 1.0.3 2.6.s4.b2, shall in 2.0;
    this LRS accepts nothing else);
  * its payload is a JSON serialization of the complete Statement before the signature was
    added (2.6.s4.b3);
  * its algorithm is RS256, RS384 or RS512 (2.6.s4.b4).

What the LRS MUST do (2.6.s5.b3): decode the JWS and load the signed Statement from its
payload; validate that it is logically equivalent to the received Statement (the Statement
comparison requirements, see lrs.xapi.comparison); if the JWS header includes an X.509
certificate ("x5c"), validate the signature against that certificate. A malformed signature
is rejected with 400 Bad Request (2.6.s5.b1): every failure here raises AttachmentError.

Not done, as the spec does not ask for it (the x5c check "is intended as a way to catch
mistakes in the signature, not as a security measure", Data 2.6 note): building or trusting
the certificate chain, checking certificate validity dates, fetching keys from "x5u"/"jku".
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lrs.xapi import jsontext
from lrs.xapi.attachments import AttachmentError, AttachmentPart, media_type
from lrs.xapi.comparison import statements_equivalent

__all__ = [
    "SIGNATURE_CONTENT_TYPE",
    "SIGNATURE_USAGE_TYPE",
    "signature_attachments",
    "verify_signed_statement",
    "verify_statement_signatures",
]

SIGNATURE_USAGE_TYPE = "http://adlnet.gov/expapi/attachments/signature"
SIGNATURE_CONTENT_TYPE = "application/octet-stream"

_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def signature_attachments(statement: dict) -> list[dict]:
    """The statement's own Attachment Objects whose usageType is the signature usageType."""
    attachments = statement.get("attachments")
    if not isinstance(attachments, list):
        return []
    return [
        a for a in attachments if isinstance(a, dict) and a.get("usageType") == SIGNATURE_USAGE_TYPE
    ]


def verify_statement_signatures(
    statement: dict, parts: dict[str, AttachmentPart], *, xapi_version: str = "2.0.0"
) -> None:
    """Verify every signature attachment of `statement` (no-op for an unsigned statement).

    `parts` are the request's attachment parts by sha2, as match_attachments returns them.
    The LRS must decode each JWS (Data 2.6.s5.b3.b1), so a signature attachment whose data was
    not sent in the request is rejected.
    """
    for attachment in signature_attachments(statement):
        sha2 = attachment.get("sha2")
        part = parts.get(sha2.lower()) if isinstance(sha2, str) else None
        if part is None:
            raise AttachmentError(
                f"the signature attachment (sha2 {sha2}) must be sent as a multipart part so "
                "that the LRS can verify it"
            )
        verify_signed_statement(statement, part, xapi_version=xapi_version)


def verify_signed_statement(
    statement: dict, part: AttachmentPart, *, xapi_version: str = "2.0.0"
) -> None:
    """Check one signature of `statement`, whose JWS is the data of `part` (Data 2.6.s5).

    Raises AttachmentError naming the failed requirement. `xapi_version` selects the
    Statement comparison rules (see lrs.xapi.comparison.statements_equivalent).
    """
    attachment = _signature_attachment(statement, part)
    declared = attachment.get("contentType")
    if not isinstance(declared, str) or media_type(declared) != SIGNATURE_CONTENT_TYPE:
        raise AttachmentError(
            f"the signature attachment has contentType {declared!r}; it must be "
            f"{SIGNATURE_CONTENT_TYPE}"
        )
    header_b64, payload_b64, signature_b64, header = _parse_compact_jws(part.data)

    alg = header.get("alg")
    if alg not in _ALGORITHMS:
        raise AttachmentError(
            f"the JWS algorithm is {alg!r}; a statement signature must use RS256, RS384 or RS512"
        )
    if "crit" in header:
        raise AttachmentError(
            "the JWS header lists critical extensions ('crit'), which this LRS does not support"
        )
    if header.get("b64", True) is not True:
        raise AttachmentError("the JWS payload must be base64url-encoded ('b64' must not be false)")

    payload_bytes = _b64url_decode(payload_b64, "payload")
    try:
        original = jsontext.loads(payload_bytes, "the JWS payload")
    except ValueError as exc:
        raise AttachmentError(f"the JWS payload is not JSON: {exc}") from exc
    if not isinstance(original, dict):
        raise AttachmentError("the JWS payload must be a JSON object (the signed statement)")

    if "x5c" in header:
        _verify_with_x5c(
            header["x5c"],
            _ALGORITHMS[alg](),
            f"{header_b64}.{payload_b64}".encode("ascii"),
            _b64url_decode(signature_b64, "signature"),
        )

    if not statements_equivalent(
        original, _without_attachment(statement, attachment), xapi_version=xapi_version
    ):
        raise AttachmentError(
            "the statement in the JWS payload is not equivalent to the statement received"
        )


def _signature_attachment(statement: dict, part: AttachmentPart) -> dict:
    sha2 = part.sha2.lower()
    for attachment in signature_attachments(statement):
        declared = attachment.get("sha2")
        if isinstance(declared, str) and declared.lower() == sha2:
            return attachment
    raise AttachmentError(
        f"the statement has no attachment with usageType {SIGNATURE_USAGE_TYPE} and sha2 {sha2}"
    )


def _without_attachment(statement: dict, attachment: dict) -> dict:
    """The statement as it was before the signature was added (Data 2.6.s4.b3)."""
    rest = [a for a in statement.get("attachments", []) if a is not attachment]
    stripped = {k: v for k, v in statement.items() if k != "attachments"}
    if rest:
        stripped["attachments"] = rest
    return stripped


def _parse_compact_jws(data: bytes) -> tuple[str, str, str, dict[str, Any]]:
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise AttachmentError("the signature is not a JWS: it is not ASCII text") from exc
    if text.startswith("{"):
        raise AttachmentError(
            "the signature uses JWS JSON Serialization; JWS Compact Serialization is required"
        )
    segments = text.split(".")
    if len(segments) != 3:
        raise AttachmentError(
            f"the signature is not a JWS in Compact Serialization: expected 3 dot-separated "
            f"parts, got {len(segments)}"
        )
    header_b64, payload_b64, signature_b64 = segments
    for name, segment in (("header", header_b64), ("payload", payload_b64)):
        if not segment:
            raise AttachmentError(f"the JWS {name} is empty")
    if not signature_b64:
        raise AttachmentError("the JWS has no signature (unsecured JWS are not accepted)")
    try:
        header = jsontext.loads(_b64url_decode(header_b64, "header"), "the JWS header")
    except ValueError as exc:
        raise AttachmentError(f"the JWS header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise AttachmentError("the JWS header must be a JSON object")
    return header_b64, payload_b64, signature_b64, header


def _b64url_decode(segment: str, name: str) -> bytes:
    """base64url without padding (RFC 7515 2, Base64url Encoding)."""
    if not _BASE64URL.match(segment) or len(segment) % 4 == 1:
        raise AttachmentError(f"the JWS {name} is not base64url-encoded (RFC 7515)")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AttachmentError(f"the JWS {name} is not base64url-encoded: {exc}") from exc


def _verify_with_x5c(
    chain: Any, algorithm: hashes.HashAlgorithm, signing_input: bytes, signature: bytes
) -> None:
    """RFC 7515 4.1.6: x5c is an array of base64 (not base64url) DER certificates; the first
    holds the key that signed. RS* is RSASSA-PKCS1-v1_5 (RFC 7518 3.3)."""
    if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
        raise AttachmentError("the JWS x5c header must be a non-empty array of certificates")
    try:
        der = base64.b64decode(chain[0], validate=True)
        certificate = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentError(f"the first x5c certificate cannot be read: {exc}") from exc
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise AttachmentError("the first x5c certificate does not hold an RSA public key")
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), algorithm)
    except InvalidSignature as exc:
        raise AttachmentError(
            "the JWS signature does not verify against the first x5c certificate"
        ) from exc
