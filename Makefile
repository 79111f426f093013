# make book | make test | make venv | make clean (build output only; keeps the
# artifact cache .cache/ and the executed chapters in book/chapters/)
# The venv is (re)built whenever pyproject.toml is newer than its stamp file,
# so a fresh clone needs nothing but python3.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv book test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[test]"
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/python -m tunestudy book

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf _build .pytest_cache book/chapters/*.running.ipynb book/chapters/*.failed.ipynb
