"""Settings of the search page (`image-search serve --ui`), checked when they are made; the flags are in cli/."""

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BaseUrl", "UiSettings", "parse_base_url"]

DEFAULT_THUMBNAIL_SIZE = 256
DEFAULT_THUMBNAIL_CACHE_BYTES = 32 * 1024 * 1024
THUMBNAIL_SIZES = (32, 1024)
# A thumbnail of 256 px is about 15 KB as JPEG, so 32 MiB holds a couple of thousand; 1 GiB is far past any need.
MAX_THUMBNAIL_CACHE_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class BaseUrl:
    """Stored uris that start with `prefix` are shown from `url` followed by the rest of the uri."""

    prefix: str
    url: str

    @property
    def origin(self) -> str | None:
        """scheme://host[:port] of `url`, or None when it is a path on this server."""
        if self.url.startswith("/"):
            return None
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


def parse_base_url(text: str) -> BaseUrl:
    """`PREFIX=URL`, as `--thumbnail-base-url` takes it; ValueError saying what is wrong otherwise."""
    prefix, separator, url = text.partition("=")
    if not separator or not prefix or not url:
        raise ValueError(
            f"--thumbnail-base-url {text!r} must be PREFIX=URL, for example s3://bucket/images/=https://cdn.example.com/images/"
        )
    parts = urlsplit(url)
    absolute = parts.scheme in ("http", "https") and parts.netloc
    if not (absolute or url.startswith("/")) or parts.query or parts.fragment:
        raise ValueError(
            f"--thumbnail-base-url {text!r}: the URL must be http(s)://host/path/ or a path on this server (/...), "
            "without a query or fragment"
        )
    return BaseUrl(prefix, url)


@dataclass(frozen=True)
class UiSettings:
    enabled: bool = False
    thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE
    thumbnail_cache_bytes: int = DEFAULT_THUMBNAIL_CACHE_BYTES
    base_urls: tuple[BaseUrl, ...] = ()

    def __post_init__(self) -> None:
        low, high = THUMBNAIL_SIZES
        if not low <= self.thumbnail_size <= high:
            raise ValueError(f"--thumbnail-size must be from {low} to {high} pixels, got {self.thumbnail_size}")
        if not 0 <= self.thumbnail_cache_bytes <= MAX_THUMBNAIL_CACHE_BYTES:
            raise ValueError(
                f"--thumbnail-cache-bytes must be from 0 (no cache) to {MAX_THUMBNAIL_CACHE_BYTES}, "
                f"got {self.thumbnail_cache_bytes}"
            )
        prefixes = [base.prefix for base in self.base_urls]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"--thumbnail-base-url names a prefix twice: {sorted(prefixes)}")
        # The longest matching prefix wins, so a folder can be mapped apart from its bucket.
        object.__setattr__(self, "base_urls", tuple(sorted(self.base_urls, key=lambda b: len(b.prefix), reverse=True)))
