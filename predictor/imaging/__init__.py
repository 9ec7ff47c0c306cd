"""Images from untrusted bytes: limits, decoding, orientation, preprocessing, accepted files, content ids."""
