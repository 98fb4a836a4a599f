// SPDX-License-Identifier: MIT
// Validates an OpenAPI document with @apidevtools/swagger-parser (the OpenAPI 3.1 schema, every
// $ref resolved), then checks that a copy with one fault put in is refused: a validator that
// accepts anything would make the first check worthless.
// Usage: node validate.js runtime/api/openapi.json
'use strict';
const fs = require('fs');
const SwaggerParser = require('@apidevtools/swagger-parser');

async function main() {
    const path = process.argv[2];
    const text = fs.readFileSync(path, 'utf8');
    const api = await SwaggerParser.validate(JSON.parse(text));
    const ops = Object.values(api.paths).reduce(
        (n, p) => n + Object.keys(p).filter((k) => k !== 'parameters').length, 0);
    if (api.openapi !== '3.1.0')
        throw new Error('openapi is ' + api.openapi + ', want 3.1.0');
    for (const [p, item] of Object.entries(api.paths))
        for (const [m, o] of Object.entries(item)) {
            if (m === 'parameters')
                continue;
            if (!o.operationId || !o.responses)
                throw new Error(m + ' ' + p + ': no operationId or responses');
            // Every operation but the probes names at least one error status.
            if (!o.tags.includes('probes') && !Object.keys(o.responses).some((s) => s >= '400'))
                throw new Error(m + ' ' + p + ': no error response');
        }
    const faults = [
        (d) => { delete d.info; },
        (d) => { d.paths['/v1/jobs'].post.responses['201'].content['application/json'].schema = { $ref: '#/components/schemas/Nope' }; },
        (d) => { d.paths['/v1/jobs/{job}'].parameters[0].in = 'body'; }, // Swagger 2's, not OpenAPI 3's
    ];
    for (let i = 0; i < faults.length; i++) {
        const broken = JSON.parse(text);
        faults[i](broken);
        let refused = false;
        try {
            await SwaggerParser.validate(broken);
        } catch (e) {
            refused = true;
        }
        if (!refused)
            throw new Error('the validator accepted broken copy ' + i);
    }
    console.log('openapi: ' + path + ' valid (' + api.openapi + ', ' +
                Object.keys(api.paths).length + ' paths, ' + ops + ' operations); ' +
                faults.length + ' broken copies refused');
}

main().catch((e) => {
    console.error('openapi: INVALID: ' + (e && e.message ? e.message : e));
    process.exit(1);
});
