"""Answers that survive a dropped connection (issue 13).

A *run* produces an answer's events apart from any client: `runs.start` pumps them
into a `Recorder`, which hands each event at once to the followers in this process
(`hub`) and writes them to the store in small batches; a client, the first or one
that reconnects, is a follower (`follow`): it replays what it missed from the store
and then follows the run live. The run ends when its answer is done, or when its
state is taken from it (a cancel, a delete), whichever comes first.
"""
