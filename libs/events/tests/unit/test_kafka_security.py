"""KafkaSecurity: the one place settings become aiokafka client arguments."""

from __future__ import annotations

import ssl

import pytest

from referral_events.kafka import KafkaSecurity, make_consumer, make_producer
from servicekit.settings import ServiceSettings


def test_plaintext_by_default() -> None:
    assert KafkaSecurity().client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert ServiceSettings().kafka_security() == KafkaSecurity()


def test_scram_over_tls_from_settings() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="link-service",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
    )
    assert "s3cret" not in repr(settings)
    kwargs = settings.kafka_security().client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "link-service",
        "s3cret",
    )
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


async def test_clients_are_built_with_it() -> None:
    sec = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "u", "p")
    producer = make_producer("127.0.0.1:1", "svc", sec)
    consumer = make_consumer("127.0.0.1:1", "grp", ["t"], sec)
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-256"
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("u", "p")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "SASL_SSL"},
        {"protocol": "SASL_PLAINTEXT", "username": "u"},
        {"protocol": "SSL", "certfile": "client.pem"},
    ],
)
def test_incomplete_security_is_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        KafkaSecurity(**kwargs)  # type: ignore[arg-type]
