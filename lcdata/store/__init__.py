"""The Zarr v3 store every stage reads and writes (docs/store.md is the contract).

layout     arrays, chunks (one chunk per block of samples), attributes, `StoreInfo`,
           creation, opening, block progress and completion
codec      quantisation of maps to the 2^-9 grid in float16, exact fast casts
refs       store fingerprints, the source store of a corrected store, dask views
lock       writer locks (flock): one whole-store writer or several slice writers
resume     what `--resume` compares
training   the arrays a training run reads, checked (`open_training_store`)
inspect    what a store holds, for `lcdata inspect`
"""
