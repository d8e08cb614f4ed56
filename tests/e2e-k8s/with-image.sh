#!/usr/bin/env bash
# Prints an example file with its GoCommerce resource set to run IMAGE, and
# renamed to NAME when one is given. spec.image is replaced or, when the
# example leaves it to the CRD default (an image a kind cluster has not
# loaded), added. Other documents of the file (Secrets) pass unchanged.
#
# Usage: with-image.sh FILE IMAGE [NAME]
# Assumes block-style YAML with `kind:` before `spec:`, as in examples/.
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }
file=$1 image=$2 name=${3:-}

awk -v image="$image" -v name="$name" '
  function finish() {
    if (gc && !has_spec) { print "spec:"; print "  image: " image }
    gc = 0; has_spec = 0; block = ""
  }
  /^---/ { finish(); print; next }
  /^kind: *GoCommerce *$/ { gc = 1 }
  /^[a-zA-Z]/ { block = $0; sub(/:.*/, "", block) }
  gc && /^spec:/ && !/^spec: *$/ {
    print "with-image.sh: spec of " FILENAME " is not block-style YAML" > "/dev/stderr"; exit 1
  }
  gc && block == "metadata" && name != "" && /^  name:/ { print "  name: " name; next }
  gc && block == "spec" && /^  image:/ { next }
  { print }
  gc && /^spec: *$/ { print "  image: " image; has_spec = 1 }
  END { finish() }
' "$file"
