#!/usr/bin/env bash
# Builds the Go test peers of the e2e suite from their upstream modules (pinned in go.mod/go.sum) into OUT/bin,
# and renders Cluster API's clusterctl repositories from the module's config/ directories into OUT/repository.
# Usage: build.sh OUT. Nothing here ships with Beowulf; .ci/install calls it once per version (cached by a hash
# of the module files and this script).
set -euo pipefail
out=${1:?usage: build.sh OUT}
cd "$(dirname "$0")"
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)

k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
capi=$(go list -m -f '{{.Version}}' sigs.k8s.io/cluster-api)
helm=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
stamp() { # the -X flags that give a binary its release version (path, version)
  local v=${2#v} ; local major=${v%%.*} rest=${v#*.}
  echo "-X $1.gitVersion=$2 -X $1.gitMajor=$major -X $1.gitMinor=${rest%%.*} -X $1.gitTreeState=clean"
}
# Unstamped, kube-apiserver says v0.0.0-master and Cluster API's managers refuse it; -s -w: no DWARF, faster links.
ldflags="-s -w $(stamp k8s.io/component-base/version "$k8s") $(stamp k8s.io/client-go/pkg/version "$k8s") \
  $(stamp sigs.k8s.io/cluster-api/version "$capi") -X helm.sh/helm/v3/internal/version.version=$helm"
# Helm's default .Capabilities.KubeVersion (as its Makefile sets it): the Kubernetes minor it is built with.
k8s_minor=${k8s#v1.}; k8s_minor=${k8s_minor%%.*}
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags="$ldflags -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done

# Several builds at once: compiles share the build cache, links (single-threaded) overlap.
pids=()
build() { # NAME PACKAGE [MODULE-DIR [LDFLAGS]]
  ( start=$(date +%s)
    cd "${3:-.}"
    go build -trimpath -ldflags "${4:-$ldflags}" -o "$out/bin/$1.tmp" "$2"
    mv "$out/bin/$1.tmp" "$out/bin/$1"
    echo "==> built $1 ($2) in $(( $(date +%s) - start ))s" ) &
  pids+=($!)
}
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl k8s.io/kubernetes/cmd/kubectl
build etcd go.etcd.io/etcd/server/v3
for p in "${pids[@]}"; do wait "$p"; done; pids=()
build capi-manager sigs.k8s.io/cluster-api/core
build capi-kubeadm-bootstrap-manager sigs.k8s.io/cluster-api/bootstrap/kubeadm
build capi-kubeadm-control-plane-manager sigs.k8s.io/cluster-api/controlplane/kubeadm
build clusterctl sigs.k8s.io/cluster-api/cmd/clusterctl
build kustomize sigs.k8s.io/kustomize/kustomize/v5
build helm helm.sh/helm/v3/cmd/helm
# Sovereign Cloud Stack's cluster-stack-operator: its own module (cso/), it pins Cluster API v1.8 and
# Kubernetes v0.30. Run from there, `go` builds against cso/go.mod.
cso_mod=github.com/SovereignCloudStack/cluster-stack-operator
cso=$(cd cso && go list -m -f '{{.Version}}' "$cso_mod")
build cluster-stack-operator "$cso_mod/cmd" cso \
  "-s -w -X $cso_mod/pkg/csoversion.gitVersion=$cso -X $cso_mod/pkg/csoversion.gitTreeState=clean"
for p in "${pids[@]}"; do wait "$p"; done

# clusterctl's local repositories for Cluster API itself: {provider}/{version}/{components}.yaml + metadata.yaml,
# rendered as CAPI's release does (kustomize build of each config/default).
src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/cluster-api)
repo="$out/repository"
render() { # PROVIDER-DIR CONFIG COMPONENTS-FILE
  mkdir -p "$repo/$1/$capi"
  "$out/bin/kustomize" build "$src/$2" >"$repo/$1/$capi/$3.tmp"
  mv "$repo/$1/$capi/$3.tmp" "$repo/$1/$capi/$3"
  install -m 0644 "$src/metadata.yaml" "$repo/$1/$capi/metadata.yaml"
}
render cluster-api core/config/default core-components.yaml
render bootstrap-kubeadm bootstrap/kubeadm/config/default bootstrap-components.yaml
render control-plane-kubeadm controlplane/kubeadm/config/default control-plane-components.yaml

# cert-manager's CRDs only: with them applied, clusterctl finds cert-manager "installed" and skips it (nothing
# runs its controllers; the harness gives the webhooks their CA bundle itself). Its own module, outside ours.
cert_manager=v1.21.2
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
cm_dir=$(cd "$scratch" && go mod download -json "github.com/cert-manager/cert-manager@$cert_manager" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$cm_dir/deploy/crds" ] || { echo "cert-manager $cert_manager: no deploy/crds in the module" >&2; exit 1; }
cat "$cm_dir"/deploy/crds/cert-manager.io_*.yaml >"$out/cert-manager-crds.yaml"
# The operator's CRDs (ClusterStack, ClusterStackRelease, ClusterAddon): plain files in its module.
cso_dir=$(cd cso && go list -m -f '{{.Dir}}' "$cso_mod")
cat "$cso_dir"/config/crd/bases/clusterstack.x-k8s.io_*.yaml >"$out/cluster-stack-operator-crds.yaml"
printf 'kubernetes=%s\ncluster-api=%s\nhelm=%s\ncert-manager=%s\ncluster-stack-operator=%s\n' \
  "$k8s" "$capi" "$helm" "$cert_manager" "$cso" >"$out/versions"
