#!/usr/bin/env python3
"""A stand-in for an external simulation program: a toy electromagnetic shower in a sampling calorimeter.

Usage: simulator.py INPUT_CARD OUTPUT_DIR

It knows nothing about iworkflow and uses only the standard library: any program that reads an input file
and writes output files would do (a Geant4 or Fortran executable, a shell script).  It reads ``key = value``
lines from the input card (energy_gev, events, layers, seed, work_seconds, hang), writes ``profile.csv``
(mean energy per layer) and ``run.log`` (a key: value summary) into OUTPUT_DIR, and exits 0.
With ``hang = 1`` it never finishes, like a run stuck on a bad input.
"""
import math
import os
import random
import sys
import time

CRITICAL_ENERGY_GEV = 0.0074  # lead
B = 0.5  # longitudinal shape parameter, per radiation length


def read_card(path):
    card = {}
    with open(path) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                card[key.strip()] = value.strip()
    return card


def shower(energy, layers, rng):
    """Energy per layer (one radiation length each): a Gamma-shaped profile with sampling fluctuations."""
    t_max = math.log(energy / CRITICAL_ENERGY_GEV) - 0.5
    a = 1 + B * t_max
    deposits = []
    for layer in range(layers):
        t = layer + 0.5
        mean = energy * B * (B * t) ** (a - 1) * math.exp(-B * t) / math.gamma(a)
        sigma = 0.1 * math.sqrt(max(mean, 0.0))  # 10%/sqrt(E) stochastic term
        deposits.append(max(0.0, rng.gauss(mean, sigma)))
    return deposits


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: simulator.py INPUT_CARD OUTPUT_DIR")
    card_path, out = sys.argv[1], sys.argv[2]
    card = read_card(card_path)
    energy = float(card["energy_gev"])
    events, layers = int(card.get("events", 100)), int(card.get("layers", 30))
    if energy <= CRITICAL_ENERGY_GEV:
        sys.exit(f"energy_gev must exceed the critical energy {CRITICAL_ENERGY_GEV} GeV, got {energy}")
    rng = random.Random(int(card.get("seed", 1)))
    start = time.time()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pid"), "w") as fh:
        fh.write(str(os.getpid()))
    print(f"simulating {events} showers of {energy} GeV in {layers} layers", flush=True)
    if int(card.get("hang", 0)):
        print("stuck (hang = 1 in the input card)", flush=True)
        while True:
            time.sleep(1)
    total = [0.0] * layers
    sq = [0.0] * layers
    for _ in range(events):
        for i, e in enumerate(shower(energy, layers, rng)):
            total[i] += e
            sq[i] += e * e
    time.sleep(float(card.get("work_seconds", 0)))  # a real simulation takes a while
    with open(os.path.join(out, "profile.csv"), "w") as fh:
        fh.write("layer,mean_gev,rms_gev\n")
        for i in range(layers):
            mean = total[i] / events
            rms = math.sqrt(max(sq[i] / events - mean * mean, 0.0))
            fh.write(f"{i},{mean:.6g},{rms:.6g}\n")
    with open(os.path.join(out, "run.log"), "w") as fh:
        fh.write(f"energy_gev: {energy}\nevents: {events}\nlayers: {layers}\n")
        fh.write(f"deposited_gev: {sum(total) / events:.6g}\n")
        fh.write(f"start: {start:.6f}\nend: {time.time():.6f}\npid: {os.getpid()}\nstatus: OK\n")
    print("done", flush=True)


if __name__ == "__main__":
    main()
