#!/bin/sh
# The consumer of flaky-consumer.yaml: emits one event, then exits cleanly
# (with restart_policy: on_failure a clean exit leaves the trigger idle).
echo "consumer starting"
echo 'OUTPUT: {"id": 1}'
