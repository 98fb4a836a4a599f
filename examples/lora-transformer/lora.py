# SPDX-License-Identifier: MIT
# The pieces of the LoRA example without a server: data, the transformer, LoRA, local training,
# and the two aggregations (FLoRA's stacking, the zero-padded average) in numpy.
"""A tiny transformer classifier, LoRA adapters on its projections, and the two ways of
aggregating heterogeneous-rank adapters that examples/lora-transformer/run.py compares.

Everything is deterministic given the seed: the data is generated here (nothing is read or
downloaded), torch runs with one thread and deterministic algorithms.

The task. A sequence of SEQ_LEN tokens from a vocabulary of VOCAB; each of the CLASSES classes
has a set of keyword tokens, and a sequence of class c holds KW_PER_SEQ keywords of c, a few
keywords of other classes (distractors) and noise tokens, shuffled. The label is c.
- pre-training domain: class c's keywords are {4c, 4c+1, 4c+2, 4c+3};
- fine-tuning domain (the shift): class c's keywords are {4c, 4c+1} (kept), 4(c+1)+2 (taken
  from the next class) and 16+c (a token that was noise). The pre-trained model reads the
  borrowed keyword as the next class and the new one as nothing, so it is often wrong.

The model. Token and position embeddings, N_LAYERS pre-LN blocks (multi-head self-attention
with projections q, k, v, o; an MLP fc1, fc2 with GELU), mean pooling, LayerNorm, a linear head.
LoRA goes on every projection (q, k, v, o, fc1, fc2 of every block): y = W x + b + B (A x),
A [r, n], B [m, r] for W [m, n]. Everything else stays frozen at its pre-trained value.
"""
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 32
SEQ_LEN = 16
CLASSES = 4
KW_PER_SEQ = 5       # keywords of the sequence's own class
DISTRACTORS = 3      # keywords of other classes
D_MODEL = 32
HEADS = 2
D_FF = 64
N_LAYERS = 1
PROJECTIONS = ("q", "k", "v", "o", "fc1", "fc2")


def setup_torch():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --- data ---

def keywords(domain):
    """The keyword tokens of each class: a list of CLASSES lists."""
    if domain == "pretrain":
        return [[4 * c, 4 * c + 1, 4 * c + 2, 4 * c + 3] for c in range(CLASSES)]
    if domain == "finetune":
        return [[4 * c, 4 * c + 1, 4 * ((c + 1) % CLASSES) + 2, 16 + c] for c in range(CLASSES)]
    raise ValueError("domain %r: pretrain or finetune" % (domain,))


def make_data(domain, labels, rng):
    """Sequences (int64 [len(labels), SEQ_LEN]) of the given labels, drawn with @rng."""
    kw = keywords(domain)
    used = {t for ks in kw for t in ks}
    noise = np.array([t for t in range(VOCAB) if t not in used])
    labels = np.asarray(labels, dtype=np.int64)
    x = np.empty((len(labels), SEQ_LEN), dtype=np.int64)
    for i, c in enumerate(labels):
        own = rng.choice(kw[c], KW_PER_SEQ)
        others = [o for o in range(CLASSES) if o != c]
        dis = [rng.choice(kw[o]) for o in rng.choice(others, DISTRACTORS)]
        rest = rng.choice(noise, SEQ_LEN - KW_PER_SEQ - DISTRACTORS)
        seq = np.concatenate([own, dis, rest])
        rng.shuffle(seq)
        x[i] = seq
    return x, labels


def client_classes(i):
    """Client @i's two main classes (non-IID): i mod 4 and i+1 mod 4."""
    return [i % CLASSES, (i + 1) % CLASSES]


def client_sizes(clients):
    """Training samples per client: 48 to 112, varying, so the weights p_k differ."""
    return [48 + 8 * ((7 * i) % 9) for i in range(clients)]


def federated_data(clients, seed, test_size=800, main_share=0.85):
    """Each client's fine-tuning data ((x, y) with @main_share of its samples from its two
    main classes, the rest from the other two) and a balanced test split of the fine-tuning
    domain. Deterministic in @seed."""
    rng = np.random.RandomState(1000 + seed)
    out = []
    for i, n in enumerate(client_sizes(clients)):
        main = client_classes(i)
        other = [c for c in range(CLASSES) if c not in main]
        n_main = int(round(n * main_share))
        labels = np.concatenate([rng.choice(main, n_main), rng.choice(other, n - n_main)])
        x, y = make_data("finetune", labels, rng)
        out.append((torch.from_numpy(x), torch.from_numpy(y)))
    x, y = make_data("finetune", np.arange(test_size) % CLASSES, rng)
    return out, (torch.from_numpy(x), torch.from_numpy(y))


# --- the model ---

class LoRALinear(nn.Module):
    """A linear layer with an optional adapter: y = W x + b + B (A x). The adapter tensors are
    not parameters of the module (the state_dict is the base model's); set_adapter() gives
    them and adapter() reads them."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.lora_A = None
        self.lora_B = None

    def set_adapter(self, a, b):
        if a is None:
            self.lora_A = self.lora_B = None
            return
        if a.shape[1] != self.weight.shape[1] or b.shape[0] != self.weight.shape[0] or \
                a.shape[0] != b.shape[1]:
            raise ValueError("adapter A %s, B %s do not fit W %s" %
                             (list(a.shape), list(b.shape), list(self.weight.shape)))
        self.lora_A = a.detach().clone().requires_grad_(True)
        self.lora_B = b.detach().clone().requires_grad_(True)

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B)
        return y


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.q = LoRALinear(D_MODEL, D_MODEL)
        self.k = LoRALinear(D_MODEL, D_MODEL)
        self.v = LoRALinear(D_MODEL, D_MODEL)
        self.o = LoRALinear(D_MODEL, D_MODEL)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.fc1 = LoRALinear(D_MODEL, D_FF)
        self.fc2 = LoRALinear(D_FF, D_MODEL)

    def forward(self, x):
        bsz, t, d = x.shape
        h = self.ln1(x)

        def heads(z):
            return z.view(bsz, t, HEADS, d // HEADS).transpose(1, 2)
        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // HEADS), dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(bsz, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Parameter(torch.randn(SEQ_LEN, D_MODEL) * 0.1)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYERS)])
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, x):
        h = self.emb(x) + self.pos
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln_f(h.mean(dim=1)))

    def lora_layers(self):
        """{pair name: LoRALinear}: 'b0.q' ... 'b1.fc2', in a fixed order."""
        return {"b%d.%s" % (i, p): getattr(b, p) for i, b in enumerate(self.blocks)
                for p in PROJECTIONS}


def base_name(pair):
    """The state_dict name of pair @pair's base weight ('b0.q' -> 'blocks.0.q.weight')."""
    blk, proj = pair.split(".")
    return "blocks.%s.%s.weight" % (blk[1:], proj)


def pairs_spec(model, max_rank):
    """The flora job's flora_pairs: base, a, b and max_rank per LoRA'd projection."""
    return [{"name": p, "base": base_name(p), "a": p + ".lora_A", "b": p + ".lora_B",
             "max_rank": int(max_rank)} for p in model.lora_layers()]


def base_weights(model):
    """{base name: float32 array}: the weights that carry adapters (the flora job's tensors)."""
    return {base_name(p): lin.weight.detach().numpy().astype(np.float32).copy()
            for p, lin in model.lora_layers().items()}


def load_base_weights(model, weights):
    with torch.no_grad():
        for p, lin in model.lora_layers().items():
            lin.weight.copy_(torch.from_numpy(np.asarray(weights[base_name(p)])))


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def pretrain(seed, samples=3000, steps=150, batch=64, lr=3e-3):
    """The base model: trained centrally on the pre-training domain, then frozen. Returns
    (model, its accuracy on fresh pre-training data, on the fine-tuning test split)."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = TinyTransformer()
    x, y = make_data("pretrain", rng.randint(0, CLASSES, samples), rng)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, samples, (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for prm in model.parameters():
        prm.requires_grad_(False)
    xv, yv = make_data("pretrain", np.arange(800) % CLASSES, rng)
    return model, accuracy(model, torch.from_numpy(xv), torch.from_numpy(yv))


# --- local training ---

def fresh_adapter(n_in, n_out, rank, gen):
    """LoRA's initialisation: A uniform in +-1/sqrt(n) (kaiming_uniform with a = sqrt(5), as
    peft does), B = 0, so that B A = 0 and training starts from the model as it is."""
    bound = 1.0 / math.sqrt(n_in)
    a = (torch.rand(rank, n_in, generator=gen) * 2 - 1) * bound
    return a, torch.zeros(n_out, rank)


def local_train(model, x, y, lr, epochs, batch, seed):
    """Adam on the adapters only (a fresh optimiser each round), cross-entropy; returns the
    mean training loss."""
    params = [t for lin in model.lora_layers().values() for t in (lin.lora_A, lin.lora_B)]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
            count += len(idx)
    return total / count


def train_seed(seed, client, rnd):
    return 1_000_003 * seed + 1009 * rnd + client


class LoraClient:
    """Client @index of the federation: its data, its LoRA rank and its copy of the frozen
    pre-trained model. flora_train() and padded_train() are its train() for the two jobs."""

    def __init__(self, index, rank, base_model, data, args):
        self.index, self.rank, self.args = index, rank, args
        self.model = copy.deepcopy(base_model)
        # The pre-trained weights: flora_train() overwrites the model's with the merged ones
        # it is given, padded_train() puts these back (its adapters sit on the frozen base).
        self.pretrained = base_weights(base_model)
        self.x, self.y = data

    def _train(self, rnd):
        return local_train(self.model, self.x, self.y, self.args.lr, self.args.local_epochs,
                           self.args.batch, train_seed(self.args.seed, self.index, rnd))

    def flora_train(self, model, rnd):
        """FLoRA: @model is the base with every earlier round merged in; new adapters of this
        client's rank start from LoRA's initialisation, train, and go back as they are
        (A [r, n], B [m, r]); the server stacks them and merges B_stack A_stack."""
        load_base_weights(self.model, model)
        gen = torch.Generator().manual_seed(train_seed(self.args.seed, self.index, rnd) + 7)
        for lin in self.model.lora_layers().values():
            m, n = lin.weight.shape
            lin.set_adapter(*fresh_adapter(n, m, self.rank, gen))
        loss = self._train(rnd)
        update = {}
        for p, lin in self.model.lora_layers().items():
            update[p + ".lora_A"] = lin.lora_A.detach().numpy().astype(np.float32).copy()
            update[p + ".lora_B"] = lin.lora_B.detach().numpy().astype(np.float32).copy()
            lin.set_adapter(None, None)
        return update, len(self.y), loss

    def padded_train(self, model, rnd):
        """Zero-padded averaging (HetLoRA's truncation): @model holds the global A [R, n] and
        B [m, R]; this client trains their first r rows / columns and sends them back padded
        with zeros to rank R; the server averages A and B separately (FedAvg)."""
        r = self.rank
        load_base_weights(self.model, self.pretrained)
        for p, lin in self.model.lora_layers().items():
            a, b = model[p + ".lora_A"], model[p + ".lora_B"]
            lin.set_adapter(torch.from_numpy(np.array(a[:r])), torch.from_numpy(np.array(b[:, :r])))
        loss = self._train(rnd)
        update = {}
        for p, lin in self.model.lora_layers().items():
            a, b = model[p + ".lora_A"], model[p + ".lora_B"]
            pa, pb = np.zeros_like(a), np.zeros_like(b)
            pa[:r] = lin.lora_A.detach().numpy()
            pb[:, :r] = lin.lora_B.detach().numpy()
            update[p + ".lora_A"], update[p + ".lora_B"] = pa, pb
            lin.set_adapter(None, None)
        return update, len(self.y), loss


def padded_start(model, max_rank, seed):
    """The padded job's starting model: global A from LoRA's initialisation at rank R, B = 0."""
    gen = torch.Generator().manual_seed(seed + 99)
    out = {}
    for p, lin in model.lora_layers().items():
        m, n = lin.weight.shape
        a, b = fresh_adapter(n, m, max_rank, gen)
        out[p + ".lora_A"], out[p + ".lora_B"] = a.numpy(), b.numpy()
    return out


def eval_flora(base_model, weights, x, y):
    """Accuracy of the base model with @weights (the merged base tensors)."""
    m = copy.deepcopy(base_model)
    load_base_weights(m, weights)
    return accuracy(m, x, y)


def eval_padded(base_model, adapters, x, y):
    """Accuracy of the frozen base model with the global adapters (A [R, n], B [m, R])."""
    m = copy.deepcopy(base_model)
    for p, lin in m.lora_layers().items():
        lin.set_adapter(torch.from_numpy(np.array(adapters[p + ".lora_A"])),
                        torch.from_numpy(np.array(adapters[p + ".lora_B"])))
    return accuracy(m, x, y)


# --- the aggregations, in numpy (float64, the result float32) ---

def weights_of(updates):
    """p_k = samples_k / sum of samples, for [(update, samples)]."""
    total = float(sum(n for _, n in updates))
    return [n / total for _, n in updates]


def flora_stack(updates, pairs, max_rank):
    """FLoRA's stacking of [(update, samples)] as the server keeps it: per pair A_stack
    [S R, n] (client k's rows p_k A_k in its block) and B_stack [m, S R] (B_k in the same
    block's columns), used blocks packed to the front. B_stack A_stack = sum_k p_k B_k A_k."""
    p = weights_of(updates)
    out = {}
    for pr in pairs:
        a0 = updates[0][0][pr["a"]]
        b0 = updates[0][0][pr["b"]]
        s = len(updates)
        a_st = np.zeros((s * max_rank, a0.shape[1]))
        b_st = np.zeros((b0.shape[0], s * max_rank))
        used = 0
        for (u, _), pk in zip(updates, p):
            r = u[pr["a"]].shape[0]
            a_st[used:used + r] = pk * u[pr["a"]].astype(np.float64)
            b_st[:, used:used + r] = u[pr["b"]]
            used += r
        out[pr["name"]] = (a_st, b_st, used)
    return out


def flora_merge(base, updates, pairs):
    """The flora_merge model: each base W + sum_k p_k B_k A_k (float64, rounded once)."""
    p = weights_of(updates)
    out = {k: np.array(v, dtype=np.float32) for k, v in base.items()}
    for pr in pairs:
        delta = sum(pk * (u[pr["b"]].astype(np.float64) @ u[pr["a"]].astype(np.float64))
                    for (u, _), pk in zip(updates, p))
        out[pr["base"]] = (base[pr["base"]].astype(np.float64) + delta).astype(np.float32)
    return out


def fedavg(updates):
    """The sample-weighted mean of [(update, samples)] per tensor (float64, as float32)."""
    p = weights_of(updates)
    return {k: sum(pk * u[k].astype(np.float64) for (u, _), pk in zip(updates, p))
            .astype(np.float32) for k in updates[0][0]}


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k], dtype=np.float64) - b[k]))) for k in b)


def run_in_process(method, clients, base_model, pairs, max_rank, rounds, seed, test):
    """The federation without a server (aggregations in numpy), for checks and tuning:
    returns the accuracy on @test after each round."""
    x_te, y_te = test
    if method == "flora":
        model = base_weights(base_model)
    else:
        model = padded_start(base_model, max_rank, seed)
    accs = []
    for r in range(rounds):
        outs = [getattr(c, method + "_train")(model, r) for c in clients]
        ups = [(u, n) for u, n, _ in outs]
        if method == "flora":
            model = flora_merge(model, ups, pairs)
            accs.append(eval_flora(base_model, model, x_te, y_te))
        else:
            model = fedavg(ups)
            accs.append(eval_padded(base_model, model, x_te, y_te))
    return accs


def product_gap(updates, pairs):
    """How far the product of the separately averaged adapters is from the average of the
    clients' products, relative: ||mean(B) mean(A) - sum_k p_k B_k A_k||_F / ||sum_k p_k B_k
    A_k||_F over all pairs together (0 for FLoRA's stacking, by construction)."""
    p = weights_of(updates)
    num = den = 0.0
    for pr in pairs:
        a_bar = sum(pk * u[pr["a"]].astype(np.float64) for (u, _), pk in zip(updates, p))
        b_bar = sum(pk * u[pr["b"]].astype(np.float64) for (u, _), pk in zip(updates, p))
        want = sum(pk * (u[pr["b"]].astype(np.float64) @ u[pr["a"]].astype(np.float64))
                   for (u, _), pk in zip(updates, p))
        num += float(np.sum((b_bar @ a_bar - want) ** 2))
        den += float(np.sum(want ** 2))
    return math.sqrt(num / den) if den > 0 else float("nan")
