#!/bin/sh
# translate.sh LANG GLOSSARY SHARD: "translates" the records of one route with the
# glossary's sed script and tags each with its language. The glossary is a soft
# dependency: when its phase failed, the texts pass through untranslated.
set -eu
export LC_ALL=C
lang=$1 glossary=$2 shard=$3
if [ -f "$glossary" ]; then script=$glossary; else script=/dev/null; fi
sed -f "$script" "$shard" | sed "s/^{/{\"lang\":\"$lang\",/"
