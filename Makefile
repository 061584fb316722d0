# Two commands on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=
# where pip has no CPU torch wheel of its own: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_PIN   := $(shell grep -m1 '^torch==' requirements-dev.txt)

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_LOCALHOST_ONLY ?= 1

.PHONY: venv demo test typecheck bench lint clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(if $(TORCH_INDEX),$(VPY) -m pip install -q "$(TORCH_PIN)" --index-url $(TORCH_INDEX))
	$(VPY) -m pip install -q -r requirements-dev.txt
	# tensorrt-stubs' own dependency is an sdist that downloads from NVIDIA: skip it.
	$(VPY) -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	$(VPY) tools/fix_tensorrt_stubs.py
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m reflector_ros.cli demo

typecheck: $(STAMP)
	$(VPY) -m mypy --config-file mypy.ini reflector_ros/backends/tensorrt_backend.py \
		reflector_ros/backends/tensorrt_pycuda.py reflector_ros/backends/engine_build.py

test: $(STAMP) typecheck
	$(VPY) -m pytest -q -rs $(PYTEST_ARGS) test

bench: $(STAMP)
	$(VPY) -m reflector_ros.cli bench

clean:
	rm -rf $(VENV) build *.egg-info
