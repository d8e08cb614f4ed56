# Kubernetes targets of GoCommerce: the operator's checks for `make test`
# (k8s-test) and the kind workflow (kind-up, images, kind-load, deploy,
# e2e-k8s). Included from the top-level Makefile; usable alone with
# `make -f mk/k8s.mk <target>` from the repository root.

K8S_BIN ?= $(HOME)/.cache/gocommerce/bin
K8S_VENV ?= $(HOME)/.cache/gocommerce/tools/venv
CARGO_TARGET_DIR ?= $(HOME)/.cache/gocommerce/target
K8S_OUT ?= $(CARGO_TARGET_DIR)/k8s
HELM ?= $(K8S_BIN)/helm
KUBECTL ?= $(K8S_BIN)/kubectl
KIND ?= kind
DOCKER ?= docker
KIND_CLUSTER ?= gocommerce
IMAGE ?= ghcr.io/gocommerce/gocommerce:dev
K8S_NAMESPACE ?= gocommerce
OPERATOR_NAMESPACE ?= gocommerce-system
OPERATOR_BIN := $(CARGO_TARGET_DIR)/debug/gocommerce-operator
KUBE_VALIDATE := $(K8S_VENV)/bin/kubernetes-validate --strict --quiet
CHART := helm/gocommerce-operator
EXAMPLES := $(wildcard examples/*.yaml)

export CARGO_TARGET_DIR

.PHONY: k8s-test k8s-tools k8s-venv operator-bin crds crd-check helm-check render-check examples-check \
        example-image-check kind-up kind-down images kind-load deploy e2e-k8s

k8s-test: crd-check helm-check render-check examples-check example-image-check ## every Kubernetes check that needs no cluster (part of `make test`)
	@echo "k8s-test: chart, rendered objects, examples and CRD are valid"

$(HELM) $(KUBECTL):
	bash ../shared/tools/k8s-tools $(K8S_BIN) >/dev/null

k8s-tools: $(HELM) $(KUBECTL)

$(K8S_VENV)/bin/kubernetes-validate:
	test -x $(K8S_VENV)/bin/python || python3 -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/pip install --quiet kubernetes-validate jsonschema pyyaml

k8s-venv: $(K8S_VENV)/bin/kubernetes-validate

operator-bin:
	cargo build --quiet -p gocommerce-operator

crds: operator-bin ## regenerate crds/gocommerce.yaml and the chart's copy from the Rust types
	$(OPERATOR_BIN) crd > crds/gocommerce.yaml
	cp crds/gocommerce.yaml $(CHART)/crds/gocommerce.yaml

crd-check: operator-bin k8s-venv
	@mkdir -p $(K8S_OUT)
	$(OPERATOR_BIN) crd > $(K8S_OUT)/crd.yaml
	@for f in crds/gocommerce.yaml $(CHART)/crds/gocommerce.yaml; do \
	  cmp -s $(K8S_OUT)/crd.yaml $$f || { echo "$$f is out of date: run make crds"; exit 1; }; \
	done
	$(KUBE_VALIDATE) crds/gocommerce.yaml

helm-check: k8s-tools k8s-venv
	@mkdir -p $(K8S_OUT)
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set instance.enabled=true --set watchNamespace=shop
	$(HELM) template gocommerce $(CHART) --namespace $(OPERATOR_NAMESPACE) --include-crds > $(K8S_OUT)/helm-default.yaml
	$(HELM) template gocommerce $(CHART) --namespace $(OPERATOR_NAMESPACE) --include-crds \
	  --set instance.enabled=true --set replicaCount=2 > $(K8S_OUT)/helm-instance.yaml
	$(HELM) template gocommerce $(CHART) --namespace $(OPERATOR_NAMESPACE) \
	  --set watchNamespace=shop --set leaderElection.enabled=false > $(K8S_OUT)/helm-namespaced.yaml
	$(KUBE_VALIDATE) $(K8S_OUT)/helm-default.yaml $(K8S_OUT)/helm-instance.yaml $(K8S_OUT)/helm-namespaced.yaml
	$(K8S_VENV)/bin/python operator/tests/validate_examples.py crds/gocommerce.yaml $(K8S_OUT)/helm-instance.yaml
	@! grep -n '"\*"' $(CHART)/templates/rbac.yaml || { echo "RBAC must not use wildcards"; exit 1; }

render-check: operator-bin k8s-venv
	@mkdir -p $(K8S_OUT)
	@set -e; for f in $(EXAMPLES); do \
	  out=$(K8S_OUT)/render-$$(basename $$f); \
	  echo "render $$f"; \
	  $(OPERATOR_BIN) render -f $$f > $$out; \
	  $(KUBE_VALIDATE) $$out; \
	done

examples-check: k8s-venv
	$(K8S_VENV)/bin/python operator/tests/validate_examples.py crds/gocommerce.yaml $(EXAMPLES)

# deploy and e2e-k8s run the image under test, not the CRD's default one
# (which kind has not loaded): every service Deployment of every example,
# passed through with-image.sh, must use it.
example-image-check: operator-bin
	@mkdir -p $(K8S_OUT)
	@set -e; for f in $(EXAMPLES); do \
	  out=$(K8S_OUT)/with-image-$$(basename $$f); \
	  bash tests/e2e-k8s/with-image.sh $$f example.test/gocommerce:under-test renamed > $$out; \
	  $(OPERATOR_BIN) render -f $$out > $$out.rendered; \
	  deployments=$$(grep -c '^kind: Deployment' $$out.rendered); \
	  images=$$(grep -c 'image: example.test/gocommerce:under-test' $$out.rendered || true); \
	  [ "$$deployments" -gt 0 ] && [ "$$images" -eq "$$deployments" ] \
	    || { echo "$$f: $$images of $$deployments Deployments run the image under test"; exit 1; }; \
	  grep -q 'app.kubernetes.io/instance: renamed' $$out.rendered || { echo "$$f: not renamed"; exit 1; }; \
	  echo "with-image $$f"; \
	done

kind-up: ## a kind cluster with a control plane and two workers (see kind-config.yaml)
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --config kind-config.yaml --name $(KIND_CLUSTER)

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

images: ## the one image holding gocommerce and gocommerce-operator
	$(DOCKER) build -t $(IMAGE) .

kind-load: ## load $(IMAGE) into the kind cluster
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: k8s-tools ## the operator (with the CRD) from the chart, then the minimal example
	$(HELM) upgrade --install gocommerce $(CHART) --namespace $(OPERATOR_NAMESPACE) --create-namespace \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
	  --set image.pullPolicy=IfNotPresent --wait
	$(KUBECTL) create namespace $(K8S_NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	bash tests/e2e-k8s/with-image.sh examples/gocommerce.yaml $(IMAGE) | $(KUBECTL) -n $(K8S_NAMESPACE) apply -f -

e2e-k8s: k8s-tools ## the end-to-end suite against the current kube context (fails without a cluster)
	KUBECTL=$(KUBECTL) HELM=$(HELM) IMAGE=$(IMAGE) bash tests/e2e-k8s/run.sh
