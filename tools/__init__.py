"""Development tools that are not part of the installed package: evaluation-set builders."""
