"""One module per dataset; each exposes ``load(root, *, skip_bad=False, **options) -> Manifest``."""
