"""How segrec's stages run on Spark: settings, Java and the session, storage and the output layout,
the stage runners (``runtime.stages``) and what the jobs' command lines share (``runtime.cli``)."""
