#!/bin/sh
# translate.sh LANG FAIL_LANG GLOSSARY SHARD: "translates" the records of one route with
# the glossary's sed script and tags each with its language. The glossary is a soft
# dependency: when its phase failed, the texts pass through untranslated. When LANG is
# FAIL_LANG, it fails on purpose, to show what orch does with a failed language.
set -eu
export LC_ALL=C
lang=$1 fail=$2 glossary=$3 shard=$4
if [ "$lang" = "$fail" ]; then
    echo "translate.sh: no translation into $lang today (fail_lang=$fail)" >&2
    exit 1
fi
if [ -f "$glossary" ]; then script=$glossary; else script=/dev/null; fi
sed -f "$script" "$shard" | sed "s/^{/{\"lang\":\"$lang\",/"
