// Copies the API's proto (the single source of truth, in the repository's
// proto/ directory) and the shared gRPC service config into dist/, so the
// packed package is self-contained.
import { cpSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');
const repo = join(pkg, '..', '..');
mkdirSync(join(pkg, 'dist', 'proto', 'stateservice', 'v1'), { recursive: true });
cpSync(
  join(repo, 'proto', 'stateservice', 'v1', 'state.proto'),
  join(pkg, 'dist', 'proto', 'stateservice', 'v1', 'state.proto'),
);
cpSync(join(repo, 'clients', 'service_config.json'), join(pkg, 'dist', 'service_config.json'));
