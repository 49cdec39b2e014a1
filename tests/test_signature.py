"""Signed Statements (xAPI 1.0.3 Data 2.6; IEEE 9274.1.1 4.2.6)."""

import base64
import copy
import datetime
import functools
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from lrs.xapi.attachments import AttachmentError, AttachmentPart
from lrs.xapi.signature import (
    SIGNATURE_USAGE_TYPE,
    verify_signed_statement,
    verify_statement_signatures,
)

HASHES = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(key, common_name: str = "xAPI signer") -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def x5c(cert: x509.Certificate) -> list[str]:
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


def jws(
    payload: object,
    key=None,
    *,
    alg: str = "RS256",
    header: dict | None = None,
    with_x5c: bool = True,
    payload_bytes: bytes | None = None,
) -> bytes:
    """A JWS in Compact Serialization (RFC 7515 7.1), signed with RSASSA-PKCS1-v1_5."""
    key = key or rsa_key("signer")
    head = {"alg": alg, **(header or {})}
    if with_x5c:
        head.setdefault("x5c", x5c(self_signed(key)))
    raw = payload_bytes if payload_bytes is not None else json.dumps(payload).encode()
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(raw)}"
    signature = key.sign(
        signing_input.encode(), padding.PKCS1v15(), HASHES.get(alg, HASHES["RS256"])
    )
    return f"{signing_input}.{b64url(signature)}".encode()


def original() -> dict:
    return {
        "id": "33cff416-e331-4c9d-969e-5373a1756120",
        "actor": {"mbox": "mailto:example@example.com", "name": "Example Learner"},
        "verb": {
            "id": "http://adlnet.gov/expapi/verbs/experienced",
            "display": {"en-US": "experienced"},
        },
        "object": {"id": "https://www.youtube.com/watch?v=xh4kIiH3Sm8"},
        "timestamp": "2013-04-01T12:00:00Z",
    }


def signed(
    token: bytes, content_type: str = "application/octet-stream"
) -> tuple[dict, AttachmentPart]:
    """The statement as the LRS receives it: the original plus the signature attachment."""
    sha2 = hashlib.sha256(token).hexdigest()
    stmt = original()
    stmt["attachments"] = [
        {
            "usageType": SIGNATURE_USAGE_TYPE,
            "display": {"en-US": "Signature"},
            "contentType": content_type,
            "length": len(token),
            "sha2": sha2,
        }
    ]
    return stmt, AttachmentPart(sha2=sha2, content_type="application/octet-stream", data=token)


def test_valid_signature_with_x5c_is_accepted():
    """Data 2.6.s5.b3: decode, compare, verify against the x5c certificate."""
    for alg in ("RS256", "RS384", "RS512"):
        stmt, part = signed(jws(original(), alg=alg))
        verify_signed_statement(stmt, part)
        verify_signed_statement(stmt, part, xapi_version="1.0.3")


def test_valid_signature_without_x5c_is_accepted():
    """Data 2.6.s5.b3.b3: the signature is only checked when the header has a certificate."""
    stmt, part = signed(jws(original(), with_x5c=False))
    verify_signed_statement(stmt, part)


def test_lrs_assigned_properties_do_not_break_equivalence():
    """Data 2.6.s5.b3.b2 with 2.3.1.b1: id/authority/stored/version set by the LRS."""
    unsigned = original()
    del unsigned["id"]
    stmt, part = signed(jws(unsigned))
    stmt["stored"] = "2013-04-01T12:00:01Z"
    stmt["authority"] = {"mbox": "mailto:lrs@example.com"}
    stmt["version"] = "1.0.0"
    stmt["timestamp"] = "2013-04-01T13:00:00+01:00"
    verify_signed_statement(stmt, part, xapi_version="1.0.3")


def test_other_attachments_stay_in_the_signed_statement():
    """Data 2.6.s4.b3: the payload is the complete statement before the signature was added."""
    other = {
        "usageType": "http://example.com/usage/essay",
        "display": {"en-US": "Essay"},
        "contentType": "text/plain",
        "length": 5,
        "sha2": hashlib.sha256(b"essay").hexdigest(),
    }
    before = original()
    before["attachments"] = [other]
    stmt, part = signed(jws(before))
    stmt["attachments"].insert(0, copy.deepcopy(other))
    verify_signed_statement(stmt, part)


def test_tampered_payload_is_rejected():
    """The signature covers header and payload: a changed payload fails the x5c check."""
    token = jws(original()).decode()
    head, _, sig = token.split(".")
    changed = original()
    changed["verb"]["id"] = "http://adlnet.gov/expapi/verbs/failed"
    stmt, part = signed(f"{head}.{b64url(json.dumps(changed).encode())}.{sig}".encode())
    stmt["verb"]["id"] = "http://adlnet.gov/expapi/verbs/failed"  # equivalent, but forged
    with pytest.raises(AttachmentError, match="does not verify against the first x5c"):
        verify_signed_statement(stmt, part)


def test_statement_different_from_payload_is_rejected():
    """Data 2.6.s5.b3.b2: the payload must be logically equivalent to the received statement."""
    stmt, part = signed(jws(original()))
    stmt["object"]["id"] = "http://example.com/another-activity"
    with pytest.raises(AttachmentError, match="not equivalent"):
        verify_signed_statement(stmt, part)


def test_wrong_algorithm_is_rejected():
    """Data 2.6.s4.b4: RS256, RS384 or RS512 only (HS256, none, PS256... are malformed)."""
    for alg in ("HS256", "PS256", "none", "rs256", None):
        header = {"alg": alg}
        token = jws(original(), header=header)
        stmt, part = signed(token)
        with pytest.raises(AttachmentError, match="RS256, RS384 or RS512"):
            verify_signed_statement(stmt, part)


def test_signature_by_another_key_is_rejected():
    """Data 2.6.s5.b3.b3: validate the signature against the certificate in the header."""
    other_cert = self_signed(rsa_key("other"))
    token = jws(original(), rsa_key("signer"), header={"x5c": x5c(other_cert)})
    stmt, part = signed(token)
    with pytest.raises(AttachmentError, match="does not verify"):
        verify_signed_statement(stmt, part)


def test_header_algorithm_must_match_the_signature():
    token = jws(original(), alg="RS256").decode()
    head, payload, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header["alg"] = "RS512"
    stmt, part = signed(f"{b64url(json.dumps(header).encode())}.{payload}.{sig}".encode())
    with pytest.raises(AttachmentError, match="does not verify"):
        verify_signed_statement(stmt, part)


def test_non_rsa_certificate_is_rejected():
    ec_cert = self_signed(ec.generate_private_key(ec.SECP256R1()))
    stmt, part = signed(jws(original(), header={"x5c": x5c(ec_cert)}))
    with pytest.raises(AttachmentError, match="RSA public key"):
        verify_signed_statement(stmt, part)


def test_malformed_x5c_is_rejected():
    for bad in ([], "abc", ["!!!"], [base64.b64encode(b"not a certificate").decode()]):
        stmt, part = signed(jws(original(), header={"x5c": bad}))
        with pytest.raises(AttachmentError, match="x5c"):
            verify_signed_statement(stmt, part)


def test_malformed_compact_jws_is_rejected():
    """Data 2.6.s5.b1: malformed signatures are rejected (400)."""
    good = jws(original()).decode()
    head, payload, sig = good.split(".")
    cases = {
        b"not a jws": "expected 3 dot-separated parts",
        f"{head}.{payload}".encode(): "expected 3 dot-separated parts",
        f"{head}.{payload}.{sig}.x".encode(): "expected 3 dot-separated parts",
        f"{head}.{payload}.".encode(): "no signature",
        f".{payload}.{sig}".encode(): "header is empty",
        f"{head}..{sig}".encode(): "payload is empty",
        f"{head}+.{payload}.{sig}".encode(): "not base64url",
        f"{b64url(b'not json')}.{payload}.{sig}".encode(): "header is not JSON",
        f"{b64url(b'[1]')}.{payload}.{sig}".encode(): "header must be a JSON object",
        b"\xff\xfe": "not ASCII",
        json.dumps({"payload": payload, "signatures": []}).encode(): "JSON Serialization",
    }
    for token, message in cases.items():
        stmt, part = signed(token)
        with pytest.raises(AttachmentError, match=message):
            verify_signed_statement(stmt, part)


def test_payload_must_be_a_json_object():
    for raw in (b"not json", b"[1, 2]", b"\xff"):
        stmt, part = signed(jws(None, payload_bytes=raw))
        with pytest.raises(AttachmentError, match="payload"):
            verify_signed_statement(stmt, part)


def test_critical_header_extensions_are_rejected():
    """RFC 7515 4.1.11: a recipient that does not understand 'crit' extensions must reject."""
    stmt, part = signed(jws(original(), header={"crit": ["exp"], "exp": 1}))
    with pytest.raises(AttachmentError, match="crit"):
        verify_signed_statement(stmt, part)


def test_signature_attachment_must_be_application_octet_stream():
    """Data 2.6.s4.b1: contentType application/octet-stream."""
    stmt, part = signed(jws(original()), content_type="application/jose")
    with pytest.raises(AttachmentError, match="application/octet-stream"):
        verify_signed_statement(stmt, part)


def test_part_must_belong_to_a_signature_attachment():
    """Data 2.6.s4.b1: usageType http://adlnet.gov/expapi/attachments/signature."""
    stmt, part = signed(jws(original()))
    stmt["attachments"][0]["usageType"] = "http://example.com/not-a-signature"
    with pytest.raises(AttachmentError, match="no attachment with usageType"):
        verify_signed_statement(stmt, part)


def test_verify_statement_signatures_checks_every_signature():
    token = jws(original())
    stmt, part = signed(token)
    verify_statement_signatures(stmt, {part.sha2: part})
    verify_statement_signatures(original(), {})  # unsigned: nothing to check
    with pytest.raises(AttachmentError, match="must be sent as a multipart part"):
        verify_statement_signatures(stmt, {})


# Data Appendix D "Example Signed Statement": the spec's own JWS (1024-bit key, a certificate
# that expired in 2014: neither is a reason to reject, Data 2.6 asks for neither check).
SPEC_EXAMPLE_JWS = (
    "ew0KICAgICJhbGciOiAiUlMyNTYiLA0KICAgICJ4NWMiOiBbDQogICAgICAgICJNSUlEQVRDQ0FtcWdBd0lCQWdJ"
    "SkFNQjFjc051QTYra01BMEdDU3FHU0liM0RRRUJCUVVBTUhFeEN6QUpCZ05WQkFZVEFsVlRNUkl3RUFZRFZRUUlF"
    "d2xVWlc1dVpYTnpaV1V4R0RBV0JnTlZCQW9URDBWNFlXMXdiR1VnUTI5dGNHRnVlVEVRTUE0R0ExVUVBeE1IUlho"
    "aGJYQnNaVEVpTUNBR0NTcUdTSWIzRFFFSkFSWVRaWGhoYlhCc1pVQmxlR0Z0Y0d4bExtTnZiVEFlRncweE16QTBN"
    "RFF4TlRJNE16QmFGdzB4TkRBME1EUXhOVEk0TXpCYU1JR1dNUXN3Q1FZRFZRUUdFd0pWVXpFU01CQUdBMVVFQ0JN"
    "SlZHVnVibVZ6YzJWbE1SRXdEd1lEVlFRSEV3aEdjbUZ1YTJ4cGJqRVlNQllHQTFVRUNoTVBSWGhoYlhCc1pTQkRi"
    "MjF3WVc1NU1SQXdEZ1lEVlFRTEV3ZEZlR0Z0Y0d4bE1SQXdEZ1lEVlFRREV3ZEZlR0Z0Y0d4bE1TSXdJQVlKS29a"
    "SWh2Y05BUWtCRmhObGVHRnRjR3hsUUdWNFlXMXdiR1V1WTI5dE1JR2ZNQTBHQ1NxR1NJYjNEUUVCQVFVQUE0R05B"
    "RENCaVFLQmdRRGp4dlpYRjMwV0w0b0tqWllYZ1IwWnlhWCt1M3k2K0pxVHFpTmtGYS9WVG5ldDZMeTJPVDZabW1j"
    "SkVQbnEzVW5ld3BIb09RK0dmaGhUa1cxM2owNmo1aU5uNG9iY0NWV1RMOXlYTnZKSCtLbyt4dTRZbC95U1BScklQ"
    "eVRqdEhkRzBNMlh6SWxtbUxxbStDQVMrS0NiSmVINHRmNTQza0lXQzVwQzVwM2NWUUlEQVFBQm8zc3dlVEFKQmdO"
    "VkhSTUVBakFBTUN3R0NXQ0dTQUdHK0VJQkRRUWZGaDFQY0dWdVUxTk1JRWRsYm1WeVlYUmxaQ0JEWlhKMGFXWnBZ"
    "MkYwWlRBZEJnTlZIUTRFRmdRVVZzM3Y1YWZFZE9lb1llVmFqQVFFNHYwV1MxUXdId1lEVlIwakJCZ3dGb0FVeVZJ"
    "YzN5dnJhNEVCejIwSTRCRjM5SUFpeEJrd0RRWUpLb1pJaHZjTkFRRUZCUUFEZ1lFQWdTL0ZGNUQwSG5qNDRydlQ2"
    "a2duM2tKQXZ2MmxqL2Z5anp0S0lyWVMzM2xqWEduNmdHeUE0cXRiWEEyM1ByTzR1Yy93WUNTRElDRHBQb2JoNjJ4"
    "VENkOXFPYktoZ3dXT2kwNVBTQkxxVXUzbXdmQWUxNUxKQkpCcVBWWjRLMGtwcGVQQlU4bTZhSVpvSDU3TC85dDRP"
    "b2FMOHlLcy9xaktGZUkxT0ZXWnh2QT0iLA0KICAgICAgICAiTUlJRE56Q0NBcUNnQXdJQkFnSUpBTUIxY3NOdUE2"
    "K2pNQTBHQ1NxR1NJYjNEUUVCQlFVQU1IRXhDekFKQmdOVkJBWVRBbFZUTVJJd0VBWURWUVFJRXdsVVpXNXVaWE56"
    "WldVeEdEQVdCZ05WQkFvVEQwVjRZVzF3YkdVZ1EyOXRjR0Z1ZVRFUU1BNEdBMVVFQXhNSFJYaGhiWEJzWlRFaU1D"
    "QUdDU3FHU0liM0RRRUpBUllUWlhoaGJYQnNaVUJsZUdGdGNHeGxMbU52YlRBZUZ3MHhNekEwTURReE5USTFOVE5h"
    "RncweU16QTBNREl4TlRJMU5UTmFNSEV4Q3pBSkJnTlZCQVlUQWxWVE1SSXdFQVlEVlFRSUV3bFVaVzV1WlhOelpX"
    "VXhHREFXQmdOVkJBb1REMFY0WVcxd2JHVWdRMjl0Y0dGdWVURVFNQTRHQTFVRUF4TUhSWGhoYlhCc1pURWlNQ0FH"
    "Q1NxR1NJYjNEUUVKQVJZVFpYaGhiWEJzWlVCbGVHRnRjR3hsTG1OdmJUQ0JuekFOQmdrcWhraUc5dzBCQVFFRkFB"
    "T0JqUUF3Z1lrQ2dZRUExc0JuQldQWjBmN1dKVUZUSnk1KzAxU2xTNVo2RERENlV5ZTl2SzlBeWNnVjVCMytXQzhI"
    "QzV1NWg5MU11akFDMUFSUFZVT3RzdlBSczQ1cUtORklnSUdSWEtQQXdaamF3RUkyc0NKUlNLVjQ3aTZCOGJEdjRX"
    "a3VHdlFhdmVaR0kwcWxtTjVSMUVpbTJnVUl0UmoxaGdjQzlyUWF2amxuRktEWTJybFhHdWtDQXdFQUFhT0IxakNC"
    "MHpBZEJnTlZIUTRFRmdRVXlWSWMzeXZyYTRFQnoyMEk0QkYzOUlBaXhCa3dnYU1HQTFVZEl3U0JtekNCbUlBVXlW"
    "SWMzeXZyYTRFQnoyMEk0QkYzOUlBaXhCbWhkYVJ6TUhFeEN6QUpCZ05WQkFZVEFsVlRNUkl3RUFZRFZRUUlFd2xV"
    "Wlc1dVpYTnpaV1V4R0RBV0JnTlZCQW9URDBWNFlXMXdiR1VnUTI5dGNHRnVlVEVRTUE0R0ExVUVBeE1IUlhoaGJY"
    "QnNaVEVpTUNBR0NTcUdTSWIzRFFFSkFSWVRaWGhoYlhCc1pVQmxlR0Z0Y0d4bExtTnZiWUlKQU1CMWNzTnVBNitq"
    "TUF3R0ExVWRFd1FGTUFNQkFmOHdEUVlKS29aSWh2Y05BUUVGQlFBRGdZRUFEaHdUZWJHazczNXlLaG04RHFDeHZO"
    "bkVaME54c1lFWU9qZ1JHMXlYVGxXNXBFNjkxZlNINUFaK1Q2ZnB3cFpjV1k1UVlrb042RG53ak94R2tTZlFDMy95"
    "R21jVURLQlB3aVo1TzJzOUMrZkUxa1VFbnJYMlhlYTRhZ1ZuZ016UjhEUTZvT2F1TFdxZWhEQitnMkVOV1JMb1Zn"
    "UyttYTUvWWNzMEdUeXJFQ1k9Ig0KICAgIF0NCn0.ew0KICAgICJ2ZXJzaW9uIjogIjEuMC4wIiwNCiAgICAiaWQi"
    "OiAiMzNjZmY0MTYtZTMzMS00YzlkLTk2OWUtNTM3M2ExNzU2MTIwIiwNCiAgICAiYWN0b3IiOiB7DQogICAgICAg"
    "ICJtYm94IjogIm1haWx0bzpleGFtcGxlQGV4YW1wbGUuY29tIiwNCiAgICAgICAgIm5hbWUiOiAiRXhhbXBsZSBM"
    "ZWFybmVyIiwNCiAgICAgICAgIm9iamVjdFR5cGUiOiAiQWdlbnQiDQogICAgfSwNCiAgICAidmVyYiI6IHsNCiAg"
    "ICAgICAgImlkIjogImh0dHA6Ly9hZGxuZXQuZ292L2V4cGFwaS92ZXJicy9leHBlcmllbmNlZCIsDQogICAgICAg"
    "ICJkaXNwbGF5Ijogew0KICAgICAgICAgICAgImVuLVVTIjogImV4cGVyaWVuY2VkIg0KICAgICAgICB9DQogICAg"
    "fSwNCiAgICAib2JqZWN0Ijogew0KICAgICAgICAiaWQiOiAiaHR0cHM6Ly93d3cueW91dHViZS5jb20vd2F0Y2g_"
    "dj14aDRrSWlIM1NtOCIsDQogICAgICAgICJvYmplY3RUeXBlIjogIkFjdGl2aXR5IiwNCiAgICAgICAgImRlZmlu"
    "aXRpb24iOiB7DQogICAgICAgICAgICAibmFtZSI6IHsNCiAgICAgICAgICAgICAgICAiZW4tVVMiOiAiVGF4IFRp"
    "cHMgJiBJbmZvcm1hdGlvbiA6IEhvdyB0byBGaWxlIGEgVGF4IFJldHVybiAiDQogICAgICAgICAgICB9LA0KICAg"
    "ICAgICAgICAgImRlc2NyaXB0aW9uIjogew0KICAgICAgICAgICAgICAgICJlbi1VUyI6ICJGaWxpbmcgYSB0YXgg"
    "cmV0dXJuIHdpbGwgcmVxdWlyZSBmaWxsaW5nIG91dCBlaXRoZXIgYSAxMDQwLCAxMDQwQSBvciAxMDQwRVogZm9y"
    "bSINCiAgICAgICAgICAgIH0NCiAgICAgICAgfQ0KICAgIH0sDQogICAgInRpbWVzdGFtcCI6ICIyMDEzLTA0LTAx"
    "VDEyOjAwOjAwWiINCn0.FWuwaPhwUbkk7h9sKW5zSvjsYNugvxJ-TrVaEgt_DCUT0bmKhQScRrjMB6P9O50uznPw"
    "T66oF1NnU_G0HVhRzS5voiXE-y7tT3z0M3-8A6YK009Bk_digVUul-HA4Fpd5IjoBBGe3yzaQ2ZvzarvRuipvNEQ"
    "CI0onpfuZZJQ0d8"
)
SPEC_EXAMPLE_SHA2 = "672fa5fa658017f1b72d65036f13379c6ab05d4ab3b6664908d8acf0b6a0c634"


def spec_example_statement() -> dict:
    return {
        "version": "1.0.0",
        "id": "33cff416-e331-4c9d-969e-5373a1756120",
        "actor": {
            "mbox": "mailto:example@example.com",
            "name": "Example Learner",
            "objectType": "Agent",
        },
        "verb": {
            "id": "http://adlnet.gov/expapi/verbs/experienced",
            "display": {"en-US": "experienced"},
        },
        "object": {
            "id": "https://www.youtube.com/watch?v=xh4kIiH3Sm8",
            "objectType": "Activity",
            "definition": {
                "name": {"en-US": "Tax Tips & Information : How to File a Tax Return "},
                "description": {
                    "en-US": "Filing a tax return will require filling out either a 1040, "
                    "1040A or 1040EZ form"
                },
            },
        },
        "timestamp": "2013-04-01T12:00:00Z",
        "attachments": [
            {
                "usageType": "http://adlnet.gov/expapi/attachments/signature",
                "display": {"en-US": "Signature"},
                "description": {"en-US": "A test signature"},
                "contentType": "application/octet-stream",
                "length": 4235,
                "sha2": SPEC_EXAMPLE_SHA2,
            }
        ],
    }


def test_spec_appendix_d_example_is_accepted():
    """Data Appendix D: the example signed statement verifies under both rule sets."""
    data = SPEC_EXAMPLE_JWS.encode()
    assert hashlib.sha256(data).hexdigest() == SPEC_EXAMPLE_SHA2
    part = AttachmentPart(SPEC_EXAMPLE_SHA2, "application/octet-stream", data)
    for version in ("1.0.3", "2.0.0"):
        verify_signed_statement(spec_example_statement(), part, xapi_version=version)
    changed = spec_example_statement()
    changed["actor"]["mbox"] = "mailto:someone.else@example.com"
    with pytest.raises(AttachmentError, match="not equivalent"):
        verify_signed_statement(changed, part)
