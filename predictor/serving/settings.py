"""The server's settings, checked when they are made, with messages that name the flag to change."""

from dataclasses import dataclass

from predictor.imaging.decoding import ImageLimits
from predictor.index.settings import MilvusSettings
from predictor.serving.request_size import default_max_request_bytes, largest_image_request_bytes


@dataclass(frozen=True)
class ServeSettings:
    milvus: MilvusSettings
    model_dir: str | None
    device: str
    max_batch_size: int
    max_batch_delay_ms: float
    limits: ImageLimits
    precision: str = "auto"
    compile: str = "auto"
    # The CPU image network in a child process; see embedding/forward_process.py.
    forward_process: bool = False
    default_top_k: int = 10
    max_top_k: int = 100
    # None derives it from `limits`; see request_size.py.
    max_request_bytes: int | None = None
    # What happens on SIGTERM; see drain.py.
    drain_s: float = 0.0
    shutdown_grace_s: float = 30.0
    # The longest a request may take, whatever it waits for (the device, Milvus); see models/base.py.
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_request_bytes is None:
            object.__setattr__(self, "max_request_bytes", default_max_request_bytes(self.limits))
        one_image = largest_image_request_bytes(self.limits)
        if self.request_bytes_limit < one_image:
            raise ValueError(
                f"--max-request-bytes {self.request_bytes_limit} cannot hold one image at --max-image-bytes "
                f"{self.limits.max_bytes} (a base64 request of {one_image} bytes): raise it or lower --max-image-bytes"
            )
        if not 0 <= self.drain_s <= 3600:
            raise ValueError(f"--drain-seconds must be between 0 and 3600, got {self.drain_s}")
        if not 0 < self.shutdown_grace_s <= 3600:
            raise ValueError(f"--shutdown-grace-seconds must be above 0 and at most 3600, got {self.shutdown_grace_s}")
        if not 0 < self.request_timeout_s <= 3600:
            raise ValueError(f"--request-timeout-s must be above 0 and at most 3600, got {self.request_timeout_s}")
        if self.shutdown_grace_s < self.request_timeout_s:
            raise ValueError(
                f"--shutdown-grace-seconds {self.shutdown_grace_s:g} is shorter than --request-timeout-s "
                f"{self.request_timeout_s:g}: a request in flight at shutdown could be cut off before its own timeout; "
                "raise the grace or lower the timeout"
            )
        if self.max_batch_size < 1:
            raise ValueError(f"--max-batch-size must be at least 1, got {self.max_batch_size}")
        if not 0 <= self.max_batch_delay_ms <= 1000:
            raise ValueError(f"--max-batch-delay-ms must be between 0 and 1000, got {self.max_batch_delay_ms}")

    @property
    def request_bytes_limit(self) -> int:
        """--max-request-bytes, or the one derived from `limits` when it was not given."""
        given = self.max_request_bytes
        return given if given is not None else default_max_request_bytes(self.limits)
