# make book | make test | make reproduce | make venv | make clean (build output only; keeps the
# artifact cache .cache/ and the executed chapters in book/chapters/)
# The venv is (re)built whenever pyproject.toml or requirements.lock is newer than its stamp file,
# so a fresh clone needs nothing but python3; requirements.lock pins every package's version.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ONLY ?=

.PHONY: venv book test reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -c requirements.lock -e ".[test]"
	touch $(STAMP)

# The committed chapters are current: only the HTML is built. A stale chapter is recomputed first.
book: $(STAMP)
	$(VENV)/bin/python -m tunestudy book

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# Every chapter (or ONLY="02_kl_shift 03_loss_plateau") recomputed from an empty artifact cache into
# book/chapters; on the CPU family that made the committed results the files come out byte-identical.
reproduce: $(STAMP)
	TUNESTUDY_CACHE=$$(mktemp -d) $(VENV)/bin/python -m tunestudy book --force $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf _build .pytest_cache book/chapters/*.running.ipynb book/chapters/*.failed.ipynb
