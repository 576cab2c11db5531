#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser test (Playwright drives
# it; `playwright install` is never used: its browser downloads are not reachable from CI).
# Installs it with apt-get when run as root; otherwise says how and fails.
set -euo pipefail

readonly CHROMIUM=/usr/bin/chromium

if [[ -x "${CHROMIUM}" ]]; then
  exit 0
fi

if [[ "${EUID}" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium with apt-get (needed by tests/e2e/test_web_page.py)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
  if [[ -x "${CHROMIUM}" ]]; then
    exit 0
  fi
  echo "apt-get installed chromium, but ${CHROMIUM} is missing" >&2
  exit 1
fi

cat >&2 <<MSG
${CHROMIUM} is missing; the browser test needs Debian's Chromium. Install it with:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium
MSG
exit 1
