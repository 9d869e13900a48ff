#!/usr/bin/env bash
# Runs one ofctl command in the cluster, in a pod built from the ofctl-drift CronJob (same image,
# manifest ConfigMap at /manifest, ofctl-credentials Secret, security context), streams its
# output and exits with ofctl's exit code. For the one-off steps of docs/migration.md:
#
#   deploy/kubernetes/ofctl-once.sh drift -f /manifest                  # 0 none, 2 drift, 1 error
#   deploy/kubernetes/ofctl-once.sh plan -f /manifest --format markdown
#   deploy/kubernetes/ofctl-once.sh export -c /manifest/ofctl.toml --kind NatsStream > adopted/natsstream.yaml
#
# Namespace: $OFCTL_NAMESPACE (default microservices). Needs kubectl and python3.
set -euo pipefail
ns=${OFCTL_NAMESPACE:-microservices}
(($#)) || { sed -n '2,11p' "$0" >&2; exit 64; }
pod="ofctl-once-$(date +%s)-$RANDOM"

kubectl -n "$ns" get cronjob ofctl-drift -o json | python3 -c '
import json, sys
name, args = sys.argv[1], sys.argv[2:]
spec = json.load(sys.stdin)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
spec["restartPolicy"] = "Never"
spec["containers"] = [dict(spec["containers"][0], name="ofctl", args=args)]
print(json.dumps({"apiVersion": "v1", "kind": "Pod", "spec": spec,
                  "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "ofctl-once"}}}))
' "$pod" "$@" | kubectl -n "$ns" create -f - >/dev/null
trap 'kubectl -n "$ns" delete pod "$pod" --wait=false >/dev/null 2>&1 || true' EXIT

phase() { kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.phase}'; }
for _ in $(seq 120); do
  [[ $(phase) == Pending ]] || break
  sleep 1
done
[[ $(phase) != Pending ]] || { kubectl -n "$ns" describe pod "$pod" >&2; exit 1; }
kubectl -n "$ns" logs -f "$pod"
while [[ $(phase) == Running ]]; do sleep 1; done
code=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')
exit "${code:-1}"
