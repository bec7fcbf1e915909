#!/bin/sh
# The image's entrypoint: the first argument selects the service, the rest is passed on.
set -eu

usage() {
    cat <<'USAGE'
usage: handrail-entrypoint SERVICE [ARGS...]
  router                        the router        (python -m handrail_router)
  validator                     the validator     (python -m handrail_validator)
  worker-agent --agent NAME     one agent's worker (python -m handrail_worker)
  circuit-breaker               the circuit breaker (python -m handrail_circuit_breaker)
  human-review                  the review queue  (python -m handrail_review)
  cli ARGS...                   the handrail CLI, e.g. `cli topics ensure`
USAGE
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 64
fi
service="$1"
shift
case "$service" in
    router) exec python -m handrail_router "$@" ;;
    validator) exec python -m handrail_validator "$@" ;;
    worker-agent | worker) exec python -m handrail_worker "$@" ;;
    circuit-breaker) exec python -m handrail_circuit_breaker "$@" ;;
    human-review | review) exec python -m handrail_review "$@" ;;
    cli | handrail) exec handrail "$@" ;;
    -h | --help | help) usage; exit 0 ;;
    *)
        echo "handrail-entrypoint: unknown service '$service'" >&2
        usage >&2
        exit 64
        ;;
esac
