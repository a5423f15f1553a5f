/**
 * Names the scope's organization in every tenant query built with `tx.kysely`: each reference
 * to a table that carries org_id gets `<table or alias>.org_id = <the scope's organization>`,
 * in the WHERE clause of its query (or the ON clause of its join, so that an outer join keeps
 * its meaning). Row-level security already confines the rows; saying the organization in the
 * statement is what lets Citus send it to one shard, and lets the planner use the
 * (org_id, ...) indexes directly.
 *
 * It runs on a tree that query-tree.ts parsed, where the filter binds every row of every tenant
 * table: a tenant table stands only in FROM, USING, a join, or as the target of a write (each
 * handled below); only inner, left and cross joins exist (a left join's ON binds the joined
 * table's rows, the others' are in WHERE); and no CTE takes a tenant table's name, so a name in
 * the tenant list always means that table.
 */
import {
  AliasNode,
  AndNode,
  BinaryOperationNode,
  ColumnNode,
  type DeleteQueryNode,
  IdentifierNode,
  type JoinNode,
  OnNode,
  type OperationNode,
  OperationNodeTransformer,
  OperatorNode,
  ParensNode,
  type QueryId,
  ReferenceNode,
  type RootOperationNode,
  type SelectQueryNode,
  TableNode,
  type UpdateQueryNode,
  ValueNode,
  WhereNode,
} from 'kysely';
import { DISTRIBUTED_TABLES } from '../citus/layout.ts';

/** The tables that carry org_id: those Citus shards by it (the others are global: organizations, RBAC). */
const ORG_SCOPED_TABLES = new Set<string>(DISTRIBUTED_TABLES);

class OrganizationFilter extends OperationNodeTransformer {
  constructor(private readonly orgId: string) {
    super();
  }

  protected override transformSelectQuery(node: SelectQueryNode, queryId?: QueryId): SelectQueryNode {
    const query = super.transformSelectQuery(node, queryId);
    return { ...query, where: this.narrowed(query.where, [...(query.from?.froms ?? []), ...this.joinsWithoutOn(query.joins)]) };
  }

  protected override transformUpdateQuery(node: UpdateQueryNode, queryId?: QueryId): UpdateQueryNode {
    const query = super.transformUpdateQuery(node, queryId);
    const tables = [...(query.table ? [query.table] : []), ...(query.from?.froms ?? []), ...this.joinsWithoutOn(query.joins)];
    return { ...query, where: this.narrowed(query.where, tables) };
  }

  protected override transformDeleteQuery(node: DeleteQueryNode, queryId?: QueryId): DeleteQueryNode {
    const query = super.transformDeleteQuery(node, queryId);
    const tables = [...query.from.froms, ...(query.using?.tables ?? []), ...this.joinsWithoutOn(query.joins)];
    return { ...query, where: this.narrowed(query.where, tables) };
  }

  protected override transformJoin(node: JoinNode, queryId?: QueryId): JoinNode {
    const join = super.transformJoin(node, queryId);
    const name = this.scopedName(join.table);
    // A join without ON (a cross join) is narrowed in its query's WHERE instead.
    if (name === undefined || join.on === undefined) return join;
    return { ...join, on: OnNode.create(AndNode.create(ParensNode.create(join.on.on), this.condition(name))) };
  }

  private joinsWithoutOn(joins: readonly JoinNode[] | undefined): OperationNode[] {
    return (joins ?? []).filter((join) => join.on === undefined).map((join) => join.table);
  }

  /** `where`, and the organization of each tenant table among `tables`. */
  private narrowed(where: WhereNode | undefined, tables: readonly OperationNode[]): WhereNode | undefined {
    let filter: OperationNode | undefined = where ? ParensNode.create(where.where) : undefined;
    for (const table of tables) {
      const name = this.scopedName(table);
      if (name === undefined) continue;
      filter = filter ? AndNode.create(filter, this.condition(name)) : this.condition(name);
    }
    return filter ? WhereNode.create(filter) : undefined;
  }

  /** The name a tenant table goes by in its query (its alias, or itself); undefined for anything else. */
  private scopedName(node: OperationNode): string | undefined {
    if (AliasNode.is(node)) {
      return TableNode.is(node.node) && this.isScoped(node.node) && IdentifierNode.is(node.alias) ? node.alias.name : undefined;
    }
    return TableNode.is(node) && this.isScoped(node) ? node.table.identifier.name : undefined;
  }

  private isScoped(table: TableNode): boolean {
    const name = table.table.identifier.name;
    return table.table.schema === undefined && ORG_SCOPED_TABLES.has(name);
  }

  private condition(name: string): OperationNode {
    return BinaryOperationNode.create(
      ReferenceNode.create(ColumnNode.create('org_id'), TableNode.create(name)),
      OperatorNode.create('='),
      ValueNode.create(this.orgId),
    );
  }
}

/** `root`, with the organization `orgId` named for every tenant table it refers to. */
export function withOrganizationFilter<Node extends RootOperationNode>(root: Node, orgId: string): Node {
  return new OrganizationFilter(orgId).transformNode(root);
}
