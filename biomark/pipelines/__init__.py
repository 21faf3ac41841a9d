"""One module per command: the flow of a run, between the library layers and the CLI.

=====================  ==========================================================
``biomark data``       :mod:`biomark.pipelines.data`: build, phantom, lung masks,
                       and the dataset of a plan (generated on first use)
``biomark extract``    :mod:`biomark.pipelines.extract` (the run) over
                       :mod:`biomark.pipelines.extract_job` (one (strategy, fold)
                       job, a pure function of files)
``biomark compare``    :mod:`biomark.pipelines.compare`
``biomark radiomics``  :mod:`biomark.pipelines.radiomics`
``biomark report``     :mod:`biomark.pipelines.report`
=====================  ==========================================================

Where jobs run is one interface, :class:`biomark.pipelines.executor.Executor`
(in this process, or on a Dask cluster); where a run's files live is a path or
an fsspec URL (:mod:`biomark.pipelines.url_storage`). Every file of a run
folder is read and written through :class:`biomark.features.run_folder.RunFolder`.

Imports flow one way: a pipeline imports from every layer below it
(``io``, ``data``, ``models``, ``train``, ``features``, ``analysis``,
``report``); only :mod:`biomark.cli` imports the pipelines. Heavy libraries
are imported inside the functions that need them, so importing a pipeline
module is cheap.
"""
