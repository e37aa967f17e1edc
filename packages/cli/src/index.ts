export { CliError, EXIT, RegistryClient } from './client.js';
export { createProgram, main } from './program.js';
