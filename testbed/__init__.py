"""The local test bed: etcd + kube-apiserver, Prometheus and Alertmanager on loopback."""
