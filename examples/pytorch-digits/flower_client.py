#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Coming from Flower: a client written to Flower's NumPyClient interface, run against Tributary.
"""A digits client written the way a Flower user writes one, run by Tributary unchanged.

``DigitsClient`` implements Flower's ``NumPyClient`` interface: ``get_parameters(config)``,
``fit(parameters, config)`` and ``evaluate(parameters, config)``, with the parameters as a list
of numpy arrays in the model's ``state_dict`` order. It subclasses ``flwr.client.NumPyClient``
when Flower is installed and nothing otherwise: Tributary does not need Flower.

In Flower, a site would start it with ``flwr.client.start_client(server_address=...,
client=DigitsClient(...).to_client())``. With Tributary, the same object goes to
``run_numpy_client(job, client)`` from the Python client: it fetches each round's task and
config, calls ``fit``, submits the arrays as the job's tensors (by position) with
``num_examples`` and the metrics, waits for the round's model and reports ``evaluate``'s loss
and metrics as a federated evaluation. The job (FedAvg, ``num_rounds``, the learning-rate
schedule in ``client_config``) plays the part of Flower's server strategy.

One client, against a running job (train.py --mode flower runs all of them and checks them):

    /usr/bin/python3 examples/pytorch-digits/flower_client.py --url http://127.0.0.1:8080 \\
        --job digits --job-token-file job-token --client 3
"""
import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "clients", "python"))
from train import evaluate_on, load_data, local_train, make_model, train_seed  # noqa: E402

try:
    from flwr.client import NumPyClient
except ImportError:
    NumPyClient = object


class DigitsClient(NumPyClient):
    """Client @cid of the digits example: trains the MLP on its slice, evaluates on its test
    share. The config keys (lr, momentum, batch, local_epochs) are what the job's
    client_config hands out, as Flower's on_fit_config_fn would."""

    def __init__(self, cid, train_data, test_data, hidden=128, activation="tanh", seed=0):
        self.cid = cid
        self.x, self.y = train_data
        self.x_test, self.y_test = test_data
        self.model = make_model(hidden, activation)
        self.seed = seed
        self.fits = 0

    def get_parameters(self, config):
        return [v.detach().cpu().numpy() for v in self.model.state_dict().values()]

    def set_parameters(self, parameters):
        keys = self.model.state_dict().keys()
        self.model.load_state_dict({k: torch.from_numpy(np.array(v))
                                    for k, v in zip(keys, parameters)})

    def fit(self, parameters, config):
        self.set_parameters(parameters)
        # Every client trains in every round: the k-th fit is round k (it seeds the shuffle).
        loss = local_train(self.model, self.x, self.y, config["lr"], config["momentum"],
                           int(config["batch"]), int(config["local_epochs"]),
                           train_seed(self.seed, self.cid, self.fits),
                           float(config.get("proximal_mu", 0.0)))  # a fedprox job's
        self.fits += 1
        return self.get_parameters({}), len(self.y), {"loss": loss}

    def evaluate(self, parameters, config):
        self.set_parameters(parameters)
        accuracy, loss = evaluate_on(self.model, self.x_test, self.y_test)
        return loss, len(self.y_test), {"accuracy": accuracy}


def main():
    from tributary_client import Client, run_numpy_client

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="Tributary's base URL")
    p.add_argument("--job", required=True, help="the job's name")
    p.add_argument("--job-token-file", required=True,
                   help="the job's token (it mints this client's credential)")
    p.add_argument("--client", type=int, required=True, help="this client's index")
    p.add_argument("--clients", type=int, default=20, help="how many clients share the data")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    with open(a.job_token_file) as f:
        job = Client(a.url, f.read().strip()).job(a.job)
    torch.set_num_threads(1)
    slices, tests, _, _ = load_data(a.clients, a.seed)
    me = job.as_client(job.mint_client("flower-%d" % a.client))
    client = DigitsClient(a.client, slices[a.client], tests[a.client], seed=a.seed)
    for r in run_numpy_client(me, client, log=print):
        print("round %d: %d samples, loss %.4f; version %d evaluated: %s" %
              (r["round"], r["samples"], r["metrics"]["loss"], r["next_version"],
               r["evaluation"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
