"""Tests of the synthetic HR generator (hrlms.synth)."""
