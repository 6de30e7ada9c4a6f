"""What was recorded: the in-memory ``Trace`` (``model``), the ``.gvz`` file and stream format
(``gvz``), torchviz's DOT graphs (``dot``) and the text report (``report``)."""
