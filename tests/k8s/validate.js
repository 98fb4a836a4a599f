// SPDX-License-Identifier: MIT
/* Validates every object of rendered Kubernetes YAML against the schemas in kubernetes-models. */
'use strict';

/*
 * usage: node validate.js FILE...
 *
 * Each document must be an object whose apiVersion and kind name a top-level
 * kind that kubernetes-models knows (an unknown kind is an error, not a skip).
 * Two checks per object:
 *
 *   schema  kubernetes-models' own validate(): types, required fields, enums,
 *           formats (quantities, int-or-string), as the API server's OpenAPI
 *           schema has them.
 *   fields  no field the schema does not declare. The schema check alone
 *           accepts unknown fields (its schemas allow additional properties),
 *           so `readinesProbe:` would pass it, while `kubectl apply` rejects
 *           it (strict field validation). The declared fields come from the
 *           package's TypeScript declarations (one interface per schema type);
 *           a type whose declaration cannot be read is not descended into,
 *           but a top-level kind whose declaration cannot be read is an error,
 *           so this check never passes by reading nothing.
 *
 * Then, across objects, what the API server would refuse or what could not
 * work once applied: a workload's selector that its pod template's labels do
 * not satisfy; a reference to a ServiceAccount, ConfigMap key, PVC or volume
 * that is not there; a probe or Service naming a port no container has; a
 * Service, NetworkPolicy or PodDisruptionBudget selecting no pods; huge pages
 * whose request and limit differ, or without a cpu or memory request.
 *
 * And what an experienced operator would flag: an image reference that is
 * not fully qualified (no registry host) or not pinned (no tag, :latest); an
 * emptyDir without a sizeLimit (a HugePages one is bounded by its resource);
 * a HugePages emptyDir mounted by a container without that huge-page request;
 * a readinessProbe that is the livenessProbe (ready would only mean alive); a
 * priorityClassName with no PriorityClass; and Tributary's own: an
 * --arena-path that is not on a HugePages emptyDir (the arena would not be on
 * huge pages, nor outlive a container restart).
 *
 * With --doc FILE (docs/DEPLOY.md), FILE must mention every object's name,
 * every added capability (as CAP_X), every huge-page quantity and every
 * container port: the walkthrough cannot drift from the manifests silently.
 *
 * Prints "Kind/name OK" per object, or the errors; exits 1 if any object
 * failed or no object was found, 2 on bad usage or unreadable input.
 */

const fs = require('fs');
const path = require('path');

let YAML;
let modelsDir;
try {
	YAML = require('yaml');
	modelsDir = path.dirname(require.resolve('kubernetes-models/v1/Pod'));
} catch (e) {
	process.stderr.write(`validate: ${e.message}\n` +
		'validate: the npm packages are missing: run scripts/deps-k8s.sh\n');
	process.exit(2);
}

/* ---- declared fields, read from the .d.ts beside each model ---- */

const dtsCache = new Map();

/* The fields of TypeMeta (@kubernetes-models/base), which top-level kinds extend. */
const TYPE_META = { fields: new Map([['apiVersion', null], ['kind', null]]), opaque: false };

/* Classify a one-line field type: a named interface, an array of one, or anything else. */
function fieldType(t) {
	let m = /^(I\w+)$/.exec(t);

	if (m)
		return { ref: m[1], array: false };
	m = /^Array<(I\w+)>$/.exec(t);
	if (m)
		return { ref: m[1], array: true };
	return null;
}

/* Parse one declaration file: its imports, interfaces and exported aliases. Cached. */
function parseDts(file) {
	if (dtsCache.has(file))
		return dtsCache.get(file);

	const out = { file, imports: new Map(), interfaces: new Map(), aliases: new Map() };
	let text;

	try {
		text = fs.readFileSync(file, 'utf8');
	} catch (e) {
		dtsCache.set(file, null);
		return null;
	}
	for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
		for (const part of m[1].split(',')) {
			const [orig, alias] = part.trim().split(/\s+as\s+/);

			out.imports.set(alias || orig, { spec: m[2], name: orig });
		}
	}
	for (const m of text.matchAll(/^export \{ ([^}]+) \};$/gm)) {
		for (const part of m[1].split(',')) {
			const [local, alias] = part.trim().split(/\s+as\s+/);

			if (alias)
				out.aliases.set(alias, local);
		}
	}
	const ifaceRe = /^export interface (\w+)(?: extends ([\w, ]+))? \{\n([\s\S]*?)\n\}$/gm;

	for (const m of text.matchAll(ifaceRe)) {
		const iface = { fields: new Map(), opaque: false, bases: [] };

		if (m[2])
			iface.bases = m[2].split(',').map((s) => s.trim());
		for (const line of m[3].split('\n')) {
			/* Fields sit at four spaces; deeper lines belong to an inline type. */
			const f = /^ {4}"([^"]+)"\??: (.*)$/.exec(line);

			if (!f)
				continue;
			const type = f[2].endsWith(';') ? fieldType(f[2].slice(0, -1)) : null;

			iface.fields.set(f[1], type);
		}
		out.interfaces.set(m[1], iface);
	}
	dtsCache.set(file, out);
	return out;
}

/* The .d.ts that an import specifier names, seen from @fromFile; null if it cannot be found. */
function resolveSpec(spec, fromFile) {
	const dir = path.dirname(fromFile);

	if (spec.startsWith('.'))
		return path.resolve(dir, spec) + '.d.ts';
	try {
		return require.resolve(spec, { paths: [dir] }).replace(/\.js$/, '.d.ts');
	} catch (e) {
		return null;
	}
}

/*
 * The interface that @name means inside declaration file @file, with its
 * bases' fields merged in: { fields, opaque, file } or null if unknown.
 */
function lookup(file, name, depth = 0) {
	const d = parseDts(file);

	if (!d || depth > 8)
		return null;
	if (name === 'TypeMeta')
		return { ...TYPE_META, file };
	const local = d.aliases.get(name) || name;
	const iface = d.interfaces.get(local);

	if (iface) {
		const fields = new Map(iface.fields);

		for (const b of iface.bases) {
			const base = lookup(file, b, depth + 1);

			if (!base)
				return null; /* a base we cannot read: do not judge its fields */
			for (const [k, v] of base.fields)
				if (!fields.has(k))
					fields.set(k, v ? { ...v, file: base.file } : v);
		}
		return { fields, file };
	}
	const imp = d.imports.get(name);

	if (!imp)
		return null;
	const target = resolveSpec(imp.spec, file);

	return target ? lookup(target, imp.name, depth + 1) : null;
}

/* Report every field of @obj that interface @iface (declared in @file) lacks, recursively. */
function checkFields(obj, iface, where, errors) {
	if (!iface || obj === null || typeof obj !== 'object' || Array.isArray(obj))
		return;
	for (const [key, val] of Object.entries(obj)) {
		const here = `${where}.${key}`;

		if (!iface.fields.has(key)) {
			errors.push(`${here}: unknown field "${key}"`);
			continue;
		}
		const t = iface.fields.get(key);

		if (!t)
			continue;
		const sub = lookup(t.file || iface.file, t.ref);

		if (t.array && Array.isArray(val))
			val.forEach((v, i) => checkFields(v, sub, `${here}[${i}]`, errors));
		else if (!t.array)
			checkFields(val, sub, here, errors);
	}
}

/* ---- kinds ---- */

/*
 * The model class for apiVersion/kind: kubernetes-models/<group>/<version>/<Kind>
 * (the core group is just <version>). Only a class whose own apiVersion and kind
 * match is a top-level kind; sub-structures like PodSpec have neither.
 */
function modelFor(apiVersion, kind) {
	if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Z]\w*$/.test(kind))
		return null;
	if (!/^([a-z0-9.-]+\/)?v[0-9]+((alpha|beta)[0-9]+)?$/.test(apiVersion))
		return null;
	const spec = `kubernetes-models/${apiVersion}/${kind}`;
	let mod, file;

	try {
		file = require.resolve(spec);
		mod = require(spec);
	} catch (e) {
		return null;
	}
	const cls = mod[kind];

	if (typeof cls !== 'function' || cls.apiVersion !== apiVersion || cls.kind !== kind)
		return null;
	return { cls, dts: file.replace(/\.js$/, '.d.ts') };
}

function schemaErrors(e) {
	if (Array.isArray(e.errors) && e.errors.length)
		return e.errors.map((x) => `${x.instancePath || '/'}: ${x.message}` +
			(x.params && x.params.allowedValues ?
				` (${x.params.allowedValues.join(', ')})` : ''));
	return [e.message];
}

/* Validate one parsed document; returns the list of errors (empty when fine). */
function validateObject(obj) {
	if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
		return ['not an object'];
	const model = modelFor(obj.apiVersion, obj.kind);

	if (!model)
		return [`unknown kind ${obj.apiVersion}/${obj.kind}`];

	const errors = [];

	try {
		new model.cls(obj).validate();
	} catch (e) {
		errors.push(...schemaErrors(e));
	}
	const top = lookup(model.dts, `I${obj.kind}`);

	if (!top)
		errors.push(`cannot read the declared fields of ${obj.kind} (${model.dts})`);
	else
		checkFields(obj, top, obj.kind, errors);
	if (!obj.metadata || typeof obj.metadata.name !== 'string' || !obj.metadata.name)
		errors.push('metadata.name is missing');
	return errors;
}

/* ---- consistency across objects ---- */

const WORKLOADS = new Set(['Deployment', 'DaemonSet', 'StatefulSet', 'ReplicaSet', 'Job']);

/* Does label set @labels satisfy every key of @match? */
function matches(match, labels) {
	return Object.entries(match || {}).every(([k, v]) => labels && labels[k] === v);
}

function podTemplate(obj) {
	const t = obj.spec && obj.spec.template;

	return t && t.spec ? t : null;
}

function containersOf(spec) {
	return [...(spec.initContainers || []), ...(spec.containers || [])];
}

const SYSTEM_PRIORITY = new Set(['system-cluster-critical', 'system-node-critical']);

/* What is wrong with image reference @ref for a production rollout, or null. */
function imageProblem(ref) {
	if (typeof ref !== 'string' || !ref)
		return 'no image';
	const at = ref.indexOf('@');
	const name = at >= 0 ? ref.slice(0, at) : ref;
	const slash = name.indexOf('/');
	const host = slash >= 0 ? name.slice(0, slash) : '';

	if (!host || !(host.includes('.') || host.includes(':') || host === 'localhost'))
		return 'not fully qualified (no registry host: each node would resolve the short ' +
			'name through its own registries)';
	if (at >= 0)
		return /^sha256:[0-9a-f]{64}$/.test(ref.slice(at + 1)) ? null :
			'a digest that is not sha256:<64 hex digits>';
	const colon = name.lastIndexOf(':');

	if (colon <= slash)
		return 'no tag or digest (that means :latest, which moves)';
	if (name.slice(colon + 1) === 'latest')
		return ':latest moves: pin a version tag or a digest';
	return null;
}

const isHuge = (v) => !!(v && v.emptyDir && (v.emptyDir.medium || '').startsWith('HugePages'));

/* The operator's checks of one container (@vols: name -> volume). */
function checkContainerOps(c, vols, errs) {
	const req = (c.resources && c.resources.requests) || {};
	const img = imageProblem(c.image);

	if (img)
		errs.push(`container ${c.name}: image ${c.image}: ${img}`);
	for (const m of c.volumeMounts || []) {
		const v = vols.get(m.name);

		if (!isHuge(v))
			continue;
		const medium = v.emptyDir.medium;
		const size = medium === 'HugePages' ? null : medium.slice('HugePages-'.length);
		const keys = Object.keys(req).filter((k) => k.startsWith('hugepages-'));

		if (size ? !keys.includes(`hugepages-${size}`) : keys.length !== 1)
			errs.push(`container ${c.name}: volume ${m.name} (emptyDir ${medium}) needs a ` +
				`hugepages-${size || '<size>'} request`);
	}
	const rp = c.readinessProbe && c.readinessProbe.httpGet;
	const lp = c.livenessProbe && c.livenessProbe.httpGet;

	if (rp && lp && rp.path === lp.path && String(rp.port) === String(lp.port))
		errs.push(`container ${c.name}: readinessProbe is the livenessProbe (${rp.path}): ` +
			'ready would only mean alive');
	const args = [...(c.command || []), ...(c.args || [])];
	const ai = args.indexOf('--arena-path');

	if (ai >= 0) {
		const p = String(args[ai + 1] || '');
		const on = (c.volumeMounts || []).find((m) => p.startsWith(m.mountPath.replace(/\/$/, '') + '/'));

		if (!on || !isHuge(vols.get(on.name)))
			errs.push(`container ${c.name}: --arena-path ${p} is not on a HugePages emptyDir ` +
				'(the arena would not be on huge pages, nor outlive a container restart)');
	}
}

/* Errors of one pod spec against the other objects (@have: kind -> Map(name -> object)). */
function checkPodSpec(spec, have, errs) {
	const get = (kind, name) => have.get(kind) && have.get(kind).get(name);
	const volumes = new Set((spec.volumes || []).map((v) => v.name));
	const sa = spec.serviceAccountName;

	if (sa && sa !== 'default' && !get('ServiceAccount', sa))
		errs.push(`serviceAccountName ${sa}: no such ServiceAccount`);
	const pc = spec.priorityClassName;

	if (pc && !SYSTEM_PRIORITY.has(pc) && !get('PriorityClass', pc))
		errs.push(`priorityClassName ${pc}: no such PriorityClass`);
	for (const v of spec.volumes || []) {
		if (v.emptyDir && !isHuge(v) && !v.emptyDir.sizeLimit)
			errs.push(`volume ${v.name}: emptyDir without a sizeLimit (it can fill the ` +
				'node\'s disk, or its memory with medium Memory)');
		if (v.persistentVolumeClaim && !get('PersistentVolumeClaim', v.persistentVolumeClaim.claimName))
			errs.push(`volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
		if (v.configMap && !v.configMap.optional && !get('ConfigMap', v.configMap.name))
			errs.push(`volume ${v.name}: no ConfigMap ${v.configMap.name}`);
	}
	const vols = new Map((spec.volumes || []).map((v) => [v.name, v]));

	for (const c of containersOf(spec)) {
		const ports = new Set((c.ports || []).map((p) => p.name).filter(Boolean));

		checkContainerOps(c, vols, errs);

		for (const e of c.env || []) {
			const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
			const cm = ref && get('ConfigMap', ref.name);

			if (ref && !ref.optional && !(cm && cm.data && ref.key in cm.data))
				errs.push(`container ${c.name}: env ${e.name}: no key ${ref.key} in ConfigMap ${ref.name}`);
		}
		for (const m of c.volumeMounts || [])
			if (!volumes.has(m.name))
				errs.push(`container ${c.name}: volumeMount ${m.name}: no such volume`);
		for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
			const p = c[probe];
			const port = p && ((p.httpGet && p.httpGet.port) || (p.tcpSocket && p.tcpSocket.port));

			if (typeof port === 'string' && !ports.has(port))
				errs.push(`container ${c.name}: ${probe}: no port named ${port}`);
		}
		const req = (c.resources && c.resources.requests) || {};
		const lim = (c.resources && c.resources.limits) || {};

		for (const k of new Set([...Object.keys(req), ...Object.keys(lim)])) {
			if (!k.startsWith('hugepages-'))
				continue;
			if (k in req && k in lim && String(req[k]) !== String(lim[k]))
				errs.push(`container ${c.name}: ${k}: request ${req[k]} differs from limit ${lim[k]}`);
			if (!('cpu' in req || 'memory' in req || 'cpu' in lim || 'memory' in lim))
				errs.push(`container ${c.name}: ${k} needs a cpu or memory request`);
		}
	}
}

/* Cross-object errors, by "Kind/name". */
function checkConsistency(objs) {
	const have = new Map();
	const out = new Map();
	const err = (o, msg) => {
		const key = `${o.kind}/${o.metadata.name}`;

		if (!out.has(key))
			out.set(key, []);
		out.get(key).push(msg);
	};

	for (const o of objs) {
		if (!have.has(o.kind))
			have.set(o.kind, new Map());
		have.get(o.kind).set(o.metadata.name, o);
	}
	const pods = objs.filter((o) => WORKLOADS.has(o.kind) && podTemplate(o));

	for (const o of pods) {
		const t = podTemplate(o);
		const errs = [];
		const sel = o.spec.selector && o.spec.selector.matchLabels;

		if (sel && !matches(sel, t.metadata && t.metadata.labels))
			errs.push('spec.selector.matchLabels not satisfied by the pod template labels');
		checkPodSpec(t.spec, have, errs);
		errs.forEach((e) => err(o, e));
	}
	for (const o of objs) {
		if (o.kind === 'Service' && o.spec && o.spec.selector) {
			const hit = pods.filter((w) => matches(o.spec.selector, podTemplate(w).metadata.labels));

			if (!hit.length) {
				err(o, 'selector matches no pod template');
				continue;
			}
			for (const p of o.spec.ports || []) {
				if (typeof p.targetPort !== 'string')
					continue;
				const named = hit.some((w) => containersOf(podTemplate(w).spec).some(
					(c) => (c.ports || []).some((cp) => cp.name === p.targetPort)));

				if (!named)
					err(o, `port ${p.name || p.port}: no container port named ${p.targetPort}`);
			}
		}
		if (o.kind === 'PodDisruptionBudget' && o.spec && o.spec.selector) {
			const sel = o.spec.selector.matchLabels;

			if (!pods.some((w) => matches(sel, podTemplate(w).metadata.labels)))
				err(o, 'selector matches no pod template');
		}
		if (o.kind === 'NetworkPolicy' && o.spec && o.spec.podSelector) {
			const sel = o.spec.podSelector.matchLabels;

			if (sel && Object.keys(sel).length &&
			    !pods.some((w) => matches(sel, podTemplate(w).metadata.labels)))
				err(o, 'podSelector matches no pod template');
		}
	}
	return out;
}

/* What --doc wants the walkthrough to mention, and which of those it does not. */
function docMissing(objs, doc) {
	const want = new Set();

	for (const o of objs) {
		want.add(o.metadata.name);
		const t = podTemplate(o);

		if (!WORKLOADS.has(o.kind) || !t)
			continue;
		for (const c of containersOf(t.spec)) {
			const caps = c.securityContext && c.securityContext.capabilities;

			for (const cap of (caps && caps.add) || [])
				want.add(`CAP_${cap}`);
			for (const p of c.ports || [])
				want.add(String(p.containerPort));
			for (const r of [c.resources && c.resources.requests, c.resources && c.resources.limits])
				for (const [k, v] of Object.entries(r || {}))
					if (k.startsWith('hugepages-'))
						want.add(String(v));
		}
	}
	return [...want].filter((w) => !doc.includes(w));
}

function main(argv) {
	let objects = 0, failed = 0, doc = null;
	const all = [];

	if (argv[0] === '--doc' && argv.length > 1) {
		try {
			doc = { file: argv[1], text: fs.readFileSync(argv[1], 'utf8') };
		} catch (e) {
			process.stderr.write(`validate: ${argv[1]}: ${e.message}\n`);
			return 2;
		}
		argv = argv.slice(2);
	}
	if (!argv.length) {
		process.stderr.write('usage: node validate.js [--doc FILE] FILE...\n');
		return 2;
	}
	for (const file of argv) {
		let text;

		try {
			text = fs.readFileSync(file, 'utf8');
		} catch (e) {
			process.stderr.write(`validate: ${file}: ${e.message}\n`);
			return 2;
		}
		const docs = YAML.parseAllDocuments(text);

		for (const [i, doc] of docs.entries()) {
			if (doc.errors.length) {
				console.log(`${file}: document ${i + 1}: YAML error: ${doc.errors[0].message}`);
				failed++;
				continue;
			}
			const obj = doc.toJS();

			if (obj === null || obj === undefined)
				continue; /* an empty document, e.g. after a trailing --- */
			const name = `${(obj && obj.kind) || '?'}/${(obj && obj.metadata && obj.metadata.name) || '?'}`;
			const errors = validateObject(obj);

			objects++;
			all.push({ name, obj, errors });
		}
	}
	/* Cross-object checks need well-formed objects; a malformed one has failed already. */
	const cross = checkConsistency(all.filter((a) => !a.errors.length).map((a) => a.obj));

	for (const a of all) {
		const errors = [...a.errors, ...(cross.get(a.name) || [])];

		if (!errors.length) {
			console.log(`${a.name} OK`);
			continue;
		}
		failed++;
		console.log(`${a.name} FAILED`);
		for (const e of errors)
			console.log(`  ${e}`);
	}
	if (doc) {
		const missing = docMissing(all.map((a) => a.obj).filter((o) => o && o.metadata), doc.text);

		if (missing.length) {
			failed++;
			console.log(`${doc.file} FAILED: does not mention ${missing.join(', ')}`);
		} else {
			console.log(`${doc.file} OK: mentions every object, capability, port and huge-page size`);
		}
	}
	console.log(`validate: ${objects} objects, ${failed} failed`);
	return failed || !objects ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
