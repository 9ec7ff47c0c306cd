"""The search page for people: plain HTML, CSS and JavaScript in `static/` (no build step, nothing from a CDN), served
by the predictor itself on the REST port with `image-search serve --ui`. routes.py holds its routes, thumbnails.py the
thumbnails of indexed images, settings.py its flags."""
