"""A plugin module that cannot be imported."""

import qckit_acme_missing_dependency  # noqa: F401
