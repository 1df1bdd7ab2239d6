#!/usr/bin/env bash
# Builds the real Kubernetes servers the Kubernetes tests start (as envtest
# does: no kubelet, no scheduler, no cluster): etcd, kube-apiserver and helm,
# from their Go modules at the versions pinned in tests/k8s/tools/*/go.mod
# (k8s.io/kubernetes with its staging modules pinned by `replace`). They go
# to .k8s/bin/, rebuilt only when a go.mod or go.sum changes; Go's build
# cache is kept in .k8s/gocache. Go is used for nothing else in the project.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/.k8s/bin
mkdir -p "$out"
export GOCACHE=$root/.k8s/gocache GOFLAGS=-mod=mod CGO_ENABLED=0
build() { # name, tool dir, package
    local name=$1 dir=$root/tests/k8s/tools/$2 pkg=$3
    local stamp
    stamp=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)
    if [[ -x $out/$name && -f $out/$name.stamp && $(cat "$out/$name.stamp") == "$stamp" ]]; then
        return
    fi
    echo "building $name ($pkg) for the Kubernetes tests; once, cached in .k8s/" >&2
    (cd "$dir" && go build -trimpath -o "$out/$name.new" "$pkg")
    mv "$out/$name.new" "$out/$name"
    echo "$stamp" >"$out/$name.stamp"
}
build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build helm helm helm.sh/helm/v4/cmd/helm
