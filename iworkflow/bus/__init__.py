"""Message buses: ``memory://`` (in-process default), ``amqp://`` (RabbitMQ), ``stomp://`` (ActiveMQ)."""
from __future__ import annotations

from ..config import Settings, redact_url
from ..errors import ConfigurationError
from .base import Bus, Delivery, Handler, Subscription
from .memory import MemoryBus

__all__ = ["Bus", "Delivery", "Handler", "Subscription", "MemoryBus", "connect"]

SCHEMES = {
    "memory": ("iworkflow.bus.memory", "MemoryBus", None),
    "amqp": ("iworkflow.bus.amqp", "AmqpBus", "amqp"),
    "amqps": ("iworkflow.bus.amqp", "AmqpBus", "amqp"),
    "stomp": ("iworkflow.bus.stomp", "StompBus", "stomp"),
    "stomp+ssl": ("iworkflow.bus.stomp", "StompBus", "stomp"),
}


def connect(url: str, settings: Settings | None = None) -> Bus:
    """Open the bus a URL names; broker clients are optional extras imported only here."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r} has an unknown scheme; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    module_name, class_name, extra = SCHEMES[scheme]
    try:
        module = __import__(module_name, fromlist=[class_name])
    except ImportError as err:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r} needs the {extra!r} extra ({err.name} is missing): "
            f"pip install 'iworkflow[{extra}]'"
        ) from None
    cls = getattr(module, class_name)
    if scheme == "memory":
        return cls(url)
    from ..config import load_settings

    settings = settings or load_settings()
    return cls(settings.broker_url_for(url), settings=settings)
