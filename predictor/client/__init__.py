"""The V2 client behind `image-search query`; the server never imports it."""
