"""The pipeline: every stage as a library call (typed settings in, an output directory and a result
object out), and the whole compression (``compress``) and the demo built from them. Stages below
this layer know nothing of each other; this layer calls them as functions, and the command line
calls this layer."""
