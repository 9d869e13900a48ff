#!/usr/bin/env bash
# ofctl in CI: the shell steps of examples/ci/github-actions.yml, runnable anywhere.
#
#   ofctl-ci.sh plan                 validate + plan; writes $OUT/plan.json (the saved plan, for
#                                    `apply`) and $OUT/comment.md (the PR comment). Exit 0 when
#                                    the plan was made (changes or not), 1 on an error.
#   ofctl-ci.sh comment PR           create or update the ONE plan comment on pull request PR
#                                    (found by its hidden marker) with $OUT/comment.md.
#   ofctl-ci.sh gate                 exit 1 if the saved plan has refused (destructive) changes.
#   ofctl-ci.sh fetch-plan SHA       download the plan reviewed on the pull request merged as
#                                    commit SHA (artifact `$ARTIFACT` of its last successful PR
#                                    run of $WORKFLOW) into $OUT/plan.json.
#   ofctl-ci.sh apply [PLANFILE]     apply exactly that saved plan (default $OUT/plan.json);
#                                    ofctl refuses it, changing nothing, if the manifest or live
#                                    state moved since it was planned.
#   ofctl-ci.sh drift-issue          run `ofctl drift`; while there is drift keep ONE open issue
#                                    (create it, then update its body), close it when drift is gone.
#
# Environment:
#   OFCTL_BIN        ofctl binary (default: ofctl on PATH)
#   OFCTL_MANIFEST   manifest folder, relative to the repository root (default: desired-state)
#   OFCTL_CI_OUT     where plan.json, comment.md, drift.md go (default: .ofctl-ci)
#   OFCTL_CI_WORKFLOW  workflow file of the PR runs, for fetch-plan (default: ofctl.yml)
#   OFCTL_CI_ARTIFACT  artifact name of the saved plan (default: ofctl-plan)
#   OFCTL_CI_LABEL   label of the drift issue (default: ofctl-drift)
#   GH_REPO, GH_TOKEN  read by `gh` (in Actions: github.repository, github.token)
#   OFCTL_CI_SHA     the commit the plan describes, shown in the comment (default: GITHUB_SHA)
#   GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_RUN_ID: the run's link in the texts, if set
# Needs bash, python3 (JSON) and the GitHub CLI `gh`, all on GitHub's ubuntu runners.
set -euo pipefail

OFCTL=${OFCTL_BIN:-ofctl}
MANIFEST=${OFCTL_MANIFEST:-desired-state}
OUT=${OFCTL_CI_OUT:-.ofctl-ci}
WORKFLOW=${OFCTL_CI_WORKFLOW:-ofctl.yml}
ARTIFACT=${OFCTL_CI_ARTIFACT:-ofctl-plan}
LABEL=${OFCTL_CI_LABEL:-ofctl-drift}
SHA=${OFCTL_CI_SHA:-${GITHUB_SHA:-}}
# Hidden markers: one plan comment per PR and one drift issue per manifest folder.
PLAN_MARKER="<!-- ofctl-plan:$MANIFEST -->"
DRIFT_MARKER="<!-- ofctl-drift:$MANIFEST -->"
# GitHub refuses comment and issue bodies over 65,536 characters.
MAX_BODY=60000

die() { echo "ofctl-ci: $*" >&2; exit 1; }
log() { echo "ofctl-ci: $*" >&2; }
mkdir -p "$OUT"

run_link() {
  if [[ -n ${GITHUB_RUN_ID:-} && -n ${GITHUB_REPOSITORY:-} ]]; then
    echo "${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"
  fi
}

# json_find MARKER FIELD: reads `gh api --paginate` output (one JSON array per page) on stdin,
# prints FIELD of the first object whose body contains MARKER and that is not a pull request.
json_find() {
  python3 -c '
import json, sys
marker, field = sys.argv[1], sys.argv[2]
text, dec, pos, items = sys.stdin.read(), json.JSONDecoder(), 0, []
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    page, pos = dec.raw_decode(text, pos)
    items += page if isinstance(page, list) else [page]
for item in items:
    if marker in (item.get("body") or "") and "pull_request" not in item:
        print(item[field])
        break
' "$1" "$2"
}

# body FILE HEADER MARKER MDFILE: writes the marker, a header and MDFILE, cut to fit GitHub.
body() {
  local file=$1 header=$2 marker=$3 md=$4 link
  link=$(run_link)
  python3 - "$file" "$header" "$marker" "$md" "$MAX_BODY" "$link" <<'PY'
import sys
out, header, marker, md, limit, link = sys.argv[1:7]
text = open(md, encoding="utf-8").read()
foot = f"\n\n---\n_Run: {link}_\n" if link else "\n"
if len(text) > int(limit):
    text = text[: int(limit)] + "\n\n… cut to fit a GitHub comment; the whole text is in the run's artifact.\n"
open(out, "w", encoding="utf-8").write(f"{marker}\n{header}\n\n{text}{foot}")
PY
}

cmd_plan() {
  local code=0
  rm -f "$OUT/plan.json" "$OUT/plan.md"
  if ! "$OFCTL" validate -f "$MANIFEST" >"$OUT/validate.txt" 2>&1; then
    cat "$OUT/validate.txt" >&2
    { echo "**ofctl validate failed**"; echo; echo '```'; cat "$OUT/validate.txt"; echo '```'; } >"$OUT/plan.md"
    body "$OUT/comment.md" "_\`$MANIFEST\`${SHA:+ at $SHA}_" "$PLAN_MARKER" "$OUT/plan.md"
    return 1
  fi
  "$OFCTL" plan -f "$MANIFEST" --format markdown -o "$OUT/plan.json" >"$OUT/plan.md" 2>"$OUT/plan.err" || code=$?
  case $code in
    0 | 2) log "plan made (exit $code: $([[ $code == 0 ]] && echo 'no changes' || echo 'changes pending'))" ;;
    *)
      cat "$OUT/plan.err" >&2
      { echo "**ofctl plan failed (exit $code)**"; echo; echo '```'; cat "$OUT/plan.err"; echo '```'; } >"$OUT/plan.md"
      ;;
  esac
  body "$OUT/comment.md" "_\`$MANIFEST\`${SHA:+ at $SHA}_" "$PLAN_MARKER" "$OUT/plan.md"
  [[ $code == 0 || $code == 2 ]]
}

cmd_comment() {
  local pr=${1:?usage: ofctl-ci.sh comment PR} id
  [[ -f $OUT/comment.md ]] || die "$OUT/comment.md not found: run \`ofctl-ci.sh plan\` first"
  id=$(gh api --paginate "repos/{owner}/{repo}/issues/$pr/comments?per_page=100" | json_find "$PLAN_MARKER" id)
  if [[ -n $id ]]; then
    gh api -X PATCH "repos/{owner}/{repo}/issues/comments/$id" -F "body=@$OUT/comment.md" >/dev/null
    log "updated the plan comment $id on #$pr"
  else
    gh api -X POST "repos/{owner}/{repo}/issues/$pr/comments" -F "body=@$OUT/comment.md" >/dev/null
    log "created the plan comment on #$pr"
  fi
}

cmd_gate() {
  local plan=${1:-$OUT/plan.json}
  [[ -f $plan ]] || die "$plan not found"
  python3 - "$plan" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1], encoding="utf-8"))
blocked = plan["summary"]["blocked"]
if blocked:
    sys.exit(f"ofctl-ci: the plan has {blocked} refused change(s); see the plan comment")
PY
}

cmd_fetch_plan() {
  local sha=${1:?usage: ofctl-ci.sh fetch-plan SHA} pr head run dir
  read -r pr head < <(gh api "repos/{owner}/{repo}/commits/$sha/pulls" | python3 -c '
import json, sys
prs = [p for p in json.load(sys.stdin) if p.get("merged_at")]
if prs:
    print(prs[0]["number"], prs[0]["head"]["sha"])
') || die "commit $sha belongs to no merged pull request: there is no reviewed plan to apply"
  run=$(gh run list --workflow "$WORKFLOW" --commit "$head" --event pull_request --status success \
    --limit 1 --json databaseId | python3 -c '
import json, sys
runs = json.load(sys.stdin)
print(runs[0]["databaseId"] if runs else "")
')
  [[ -n $run ]] || die "no successful $WORKFLOW run for #$pr at $head: its plan was never made"
  dir=$(mktemp -d)
  gh run download "$run" -n "$ARTIFACT" -D "$dir"
  [[ -f $dir/plan.json ]] || die "artifact $ARTIFACT of run $run has no plan.json"
  mv "$dir/plan.json" "$OUT/plan.json"
  rm -rf "$dir"
  log "fetched the plan reviewed on #$pr (run $run, head $head)"
}

cmd_apply() {
  local plan=${1:-$OUT/plan.json}
  [[ -f $plan ]] || die "$plan not found"
  if ! "$OFCTL" apply "$plan" --auto-approve; then
    die "the reviewed plan was not applied (stale or failed, see above). Open a pull request (or re-run its plan job) to review a new plan."
  fi
}

cmd_drift_issue() {
  local code=0 number
  "$OFCTL" drift -f "$MANIFEST" --format markdown >"$OUT/drift.md" 2>"$OUT/drift.err" || code=$?
  [[ $code == 0 || $code == 2 ]] || { cat "$OUT/drift.err" >&2; die "ofctl drift failed (exit $code)"; }
  number=$(gh api --paginate "repos/{owner}/{repo}/issues?state=open&labels=$LABEL&per_page=100" | json_find "$DRIFT_MARKER" number)
  if [[ $code == 2 ]]; then
    body "$OUT/issue.md" "Live state differs from \`$MANIFEST\` (last checked $(date -u +%Y-%m-%dT%H:%MZ))." "$DRIFT_MARKER" "$OUT/drift.md"
    if [[ -n $number ]]; then
      gh api -X PATCH "repos/{owner}/{repo}/issues/$number" -F "body=@$OUT/issue.md" >/dev/null
      log "drift: updated issue #$number"
    else
      gh api -X POST "repos/{owner}/{repo}/issues" -f "title=ofctl: drift in $MANIFEST" \
        -F "body=@$OUT/issue.md" -f "labels[]=$LABEL" >/dev/null
      log "drift: opened an issue"
    fi
  elif [[ -n $number ]]; then
    gh api -X POST "repos/{owner}/{repo}/issues/$number/comments" \
      -f "body=No drift any more ($(date -u +%Y-%m-%dT%H:%MZ)); closing. $(run_link)" >/dev/null
    gh api -X PATCH "repos/{owner}/{repo}/issues/$number" -f state=closed -f state_reason=completed >/dev/null
    log "drift: gone, closed issue #$number"
  else
    log "drift: none"
  fi
}

case ${1:-} in
  plan) shift; cmd_plan "$@" ;;
  comment) shift; cmd_comment "$@" ;;
  gate) shift; cmd_gate "$@" ;;
  fetch-plan) shift; cmd_fetch_plan "$@" ;;
  apply) shift; cmd_apply "$@" ;;
  drift-issue) shift; cmd_drift_issue "$@" ;;
  *) sed -n '2,30p' "$0" >&2; exit 64 ;;
esac
