// Moved to the shared test workspace; kept so existing imports keep working.
export { freePort, type RunningProcess, startNode } from '@branchline/test-utils/processes';
