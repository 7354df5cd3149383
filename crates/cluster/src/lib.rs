#![forbid(unsafe_code)]
//! Real clusters: kube-apiserver's static-pod manifest (`/etc/kubernetes/manifests/
//! kube-apiserver.yaml` on kubeadm and minikube nodes) read into what atrest's offline
//! commands need (etcd access, the encryption configuration, host paths behind container
//! paths), and the edits `atrest cluster enable` makes to it.

pub mod edit;
mod manifest;

pub use manifest::{ApiServerManifest, EtcdAccess, ManifestError, Volume, VolumeMount};
