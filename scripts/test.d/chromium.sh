# The dashboard's browser test (e2e/tests/dashboard.rs) drives a real headless Chromium:
# Debian's own package, so no browser download at test time. Sourced by scripts/test.
need_cmd chromium chromium
