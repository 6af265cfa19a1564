#!/bin/sh
# Arguments arrive as $1, $2, ...: the action's rendered `args`.
echo "deploying to $1 ($2 $3)"
echo "OUTPUT: {\"env\": \"$1\", \"flag\": \"$2\", \"region\": \"$3\", \"count\": $#}"
